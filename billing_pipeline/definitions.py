"""The code location: each flow's definitions merged, with the resources bound once.

Dagster loads the single `Definitions` object at module level. Each flow (usage, reporting to
Stripe, webhooks) keeps its own `definitions.py`, as Dagster's reference projects do; resources
are bound here only, because `Definitions.merge` refuses two different resources under one key.
"""

from __future__ import annotations

import warnings

import dagster as dg

from billing_pipeline import config
from billing_pipeline.resources import PostgresResource, stripe_from_environment
from billing_pipeline.stripe_reporting import definitions as stripe_reporting
from billing_pipeline.usage import definitions as usage
from billing_pipeline.webhooks import definitions as webhooks

# Single-run backfills (`backfill_policy`) are deliberate here; Dagster 1.13 still labels the
# parameter beta and would repeat that warning in every process that loads the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

defs = dg.Definitions.merge(
    usage.defs,
    stripe_reporting.defs,
    webhooks.defs,
    dg.Definitions(
        # Every step is light Python around SQL in Postgres and calls to Stripe, so a process per
        # step (Dagster's default) would cost more than the work: one run, one process.
        executor=dg.in_process_executor,
        resources={
            "postgres": PostgresResource(database_url=dg.EnvVar(config.DATABASE_URL)),
            "stripe": stripe_from_environment(),
        },
    ),
)
