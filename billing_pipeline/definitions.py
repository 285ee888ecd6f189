"""The code location: every asset, check, job, schedule, sensor and resource, assembled once.

Dagster loads the single `Definitions` object at module level, so the parts are merged inline.
"""

from __future__ import annotations

import warnings

import dagster as dg

from billing_pipeline import config
from billing_pipeline.jobs import daily_billing_job
from billing_pipeline.late_data import late_readings_sensor
from billing_pipeline.reporting.assets import build_reporting_asset
from billing_pipeline.reporting.checks import (
    reconciliation_job,
    reconciliation_schedule,
    reporting_checks,
)
from billing_pipeline.resources import PostgresResource, stripe_from_environment
from billing_pipeline.schedules import daily_billing_schedule
from billing_pipeline.usage_assets import build_usage_assets
from billing_pipeline.webhooks import dagster_defs as webhooks

# Single-run backfills (`backfill_policy`) are deliberate here; Dagster 1.13 still labels the
# parameter beta and would repeat that warning in every process that loads the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

defs = dg.Definitions.merge(
    dg.Definitions(
        assets=[*build_usage_assets(), build_reporting_asset()],
        asset_checks=reporting_checks,
        jobs=[daily_billing_job, reconciliation_job],
        schedules=[daily_billing_schedule, reconciliation_schedule],
        sensors=[late_readings_sensor],
        # Every step is light Python around SQL in Postgres and calls to Stripe, so a process per
        # step (Dagster's default) would cost more than the work: one run, one process.
        executor=dg.in_process_executor,
        resources={
            "postgres": PostgresResource(database_url=dg.EnvVar(config.DATABASE_URL)),
            "stripe": stripe_from_environment(),
        },
    ),
    webhooks.webhook_defs,
)
