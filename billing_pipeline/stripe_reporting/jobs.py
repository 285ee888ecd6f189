"""The reporting flow's jobs: the daily billing run and the reconciliation run."""

from __future__ import annotations

from datetime import date

import dagster as dg

from billing_pipeline.partitions import daily_partitions
from billing_pipeline.stripe_reporting.checks import reporting_checks

# A failed billing run (schedule, period close, late-data sensor) is re-run by the daemon
# (`run_retries` in dagster.yaml) from its failed steps: every step is safe to repeat, and the
# ledger resends only what Stripe does not hold. Three runs, each with the reporting step's own
# retries, outlast a Stripe or storage outage of several minutes, inside Stripe's 1 h grace.
RUN_RETRY_TAGS = {"dagster/max_retries": "3", "dagster/retry_strategy": "FROM_FAILURE"}

daily_billing_job = dg.define_asset_job(
    name="daily_billing",
    selection=dg.AssetSelection.groups("usage", "stripe"),
    partitions_def=daily_partitions,
    description="Compute one UTC day's usage per meter and report it to Stripe exactly once.",
    tags=RUN_RETRY_TAGS,
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
    have a single-run backfill policy, so the range is computed and planned at once."""
    return {
        "dagster/asset_partition_range_start": first_day.isoformat(),
        "dagster/asset_partition_range_end": last_day.isoformat(),
    }
