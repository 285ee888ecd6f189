"""The reporting flow's Dagster definitions: `stripe/meter_events`, its checks, jobs, schedules
the late-data, period-close and draft invoice sensors, merged into the code location by
definitions.py."""

from __future__ import annotations

import dagster as dg

from billing_pipeline.stripe_reporting.assets import build_reporting_asset
from billing_pipeline.stripe_reporting.bill_so_far_assets import bill_so_far_asset
from billing_pipeline.stripe_reporting.checks import reporting_checks
from billing_pipeline.stripe_reporting.draft_invoice_check import draft_invoices_verified
from billing_pipeline.stripe_reporting.jobs import (
    daily_billing_job,
    draft_invoice_verification_job,
    reconciliation_job,
)
from billing_pipeline.stripe_reporting.schedules import (
    daily_billing_schedule,
    reconciliation_schedule,
    trailing_recompute_schedule,
)
from billing_pipeline.stripe_reporting.sensors import (
    draft_invoice_sensor,
    late_readings_sensor,
    period_close_sensor,
)
from billing_pipeline.stripe_reporting.status_assets import (
    billing_status_asset,
    billing_status_schedule,
)

defs = dg.Definitions(
    assets=[build_reporting_asset(), billing_status_asset, bill_so_far_asset],
    asset_checks=[*reporting_checks, draft_invoices_verified],
    jobs=[daily_billing_job, draft_invoice_verification_job, reconciliation_job],
    schedules=[
        daily_billing_schedule,
        trailing_recompute_schedule,
        reconciliation_schedule,
        billing_status_schedule,
    ],
    sensors=[late_readings_sensor, period_close_sensor, draft_invoice_sensor],
)
