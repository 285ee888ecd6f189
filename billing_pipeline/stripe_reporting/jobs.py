"""The reporting flow's jobs: the daily billing run and the reconciliation run."""

from __future__ import annotations

from datetime import date

import dagster as dg

from billing_pipeline.partitions import FIRST_BILLED_DAY, daily_partitions
from billing_pipeline.stripe_reporting.checks import reporting_checks

daily_billing_job = dg.define_asset_job(
    name="daily_billing",
    selection=dg.AssetSelection.groups("usage", "stripe"),
    partitions_def=daily_partitions,
    description="Compute one UTC day's usage per meter and report it to Stripe exactly once.",
)

reconciliation_job = dg.define_asset_job(
    "stripe_reconciliation",
    selection=dg.AssetSelection.checks(*reporting_checks),
    partitions_def=daily_partitions,
    description=(
        "Run the reconciliation check over a day or a range of days (launch it with a partition "
        "range, or backfill) and the ledger attention checks, without sending anything."
    ),
)


def partition_range_tags(first_day: date, last_day: date) -> dict[str, str]:
    """Run tags for one run over the days [first_day, last_day] of `daily_billing`: its assets
    have a single-run backfill policy, so the range is computed and planned at once. A range
    reaching before the first partition (the 35-day recompute on young data) starts there: a
    run naming a partition that does not exist would fail."""
    first_day = max(first_day, min(FIRST_BILLED_DAY, last_day))
    return {
        "dagster/asset_partition_range_start": first_day.isoformat(),
        "dagster/asset_partition_range_end": last_day.isoformat(),
    }
