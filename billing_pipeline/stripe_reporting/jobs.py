"""The reporting flow's jobs: the daily billing run and the reconciliation run."""

from __future__ import annotations

from datetime import date

import dagster as dg

from billing_pipeline.partitions import daily_partitions
from billing_pipeline.stripe_reporting.checks import reporting_checks
from billing_pipeline.stripe_reporting.reconciliation_check import stripe_reconciliation

# Without the reconciliation check: its Stripe reads are paced and budgeted (minutes at 100,000
# organizations), so it runs in its own job and billing never waits for it.
daily_billing_job = dg.define_asset_job(
    name="daily_billing",
    selection=dg.AssetSelection.groups("usage", "stripe")
    - dg.AssetSelection.checks(stripe_reconciliation),
    partitions_def=daily_partitions,
    description=(
        "Compute one UTC day's usage per meter and report it to Stripe exactly once, with the "
        "ledger and invoice checks; Stripe reconciliation runs in the stripe_reconciliation job."
    ),
)

reconciliation_job = dg.define_asset_job(
    "stripe_reconciliation",
    selection=dg.AssetSelection.checks(*reporting_checks),
    partitions_def=daily_partitions,
    description=(
        "Run the reconciliation check over a day or a range of days (launch it with a partition "
        "range, or backfill) and the ledger attention checks, without sending anything; its "
        "Stripe reads are bounded by a daily budget (STRIPE_RECONCILIATION_DAILY_CALLS)."
    ),
)


def partition_range_tags(first_day: date, last_day: date) -> dict[str, str]:
    """Run tags for one run over the days [first_day, last_day] of `daily_billing`: its assets
    have a single-run backfill policy, so the range is computed and planned at once."""
    return {
        "dagster/asset_partition_range_start": first_day.isoformat(),
        "dagster/asset_partition_range_end": last_day.isoformat(),
    }
