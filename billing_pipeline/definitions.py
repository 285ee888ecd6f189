"""The code location: each flow's definitions merged, with the resources bound once.

Dagster loads the single `Definitions` object at module level. Each flow (usage, reporting to
Stripe, webhooks) keeps its own `definitions.py`, as Dagster's reference projects do; resources
are bound here only, because `Definitions.merge` refuses two different resources under one key.
"""

from __future__ import annotations

import warnings

import dagster as dg

# Two Dagster 1.13 labels on features used deliberately: single-run backfills
# (`backfill_policy`, beta) and per-day reconciliation checks (a `partitions_def` on an asset
# check, preview). Dagster warns when the decorators run, i.e. while the flows below are
# imported, and again in every process that loads the code location, so the filters come first.
# Each names its own message: any other beta or preview warning still shows.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
warnings.filterwarnings(
    "ignore",
    category=dg.PreviewWarning,
    message="Specifying a partitions_def on an AssetCheckSpec",
)

from billing_pipeline import config  # noqa: E402
from billing_pipeline.alerts import definitions as alerts  # noqa: E402
from billing_pipeline.resources import PostgresResource, stripe_from_environment  # noqa: E402
from billing_pipeline.stripe_reporting import definitions as stripe_reporting  # noqa: E402
from billing_pipeline.usage import definitions as usage  # noqa: E402
from billing_pipeline.webhooks import definitions as webhooks  # noqa: E402

defs = dg.Definitions.merge(
    usage.defs,
    stripe_reporting.defs,
    webhooks.defs,
    alerts.defs,
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
