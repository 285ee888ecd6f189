"""The reporting flow's jobs: the daily billing run, the draft invoice verification run and the
reconciliation run."""

from __future__ import annotations

from datetime import date

import dagster as dg

from billing_pipeline.partitions import FIRST_BILLED_DAY, daily_partitions
from billing_pipeline.stripe_reporting.checks import reporting_checks
from billing_pipeline.stripe_reporting.draft_invoice_check import draft_invoices_verified
from billing_pipeline.stripe_reporting.reconciliation_check import stripe_reconciliation

# The billing graph with its checks. The draft verification only `verify_draft_invoice` runs (it
# looks at one draft, launched per draft by its sensor); reconciliation's Stripe reads are paced
# and budgeted (minutes at 100,000 organizations), so it runs in its own job and billing never
# waits for it.
_BILLING = dg.AssetSelection.groups("usage", "stripe") - dg.AssetSelection.checks(
    stripe_reconciliation
)

# A failed billing run (schedule, period close, late-data sensor) is re-run by the daemon
# (`run_retries` in dagster.yaml) from its failed steps: every step is safe to repeat, and the
# ledger resends only what Stripe does not hold. Three runs, each with the reporting step's own
# retries, outlast a Stripe or storage outage of several minutes, inside Stripe's 1 h grace.
RUN_RETRY_TAGS = {"dagster/max_retries": "3", "dagster/retry_strategy": "FROM_FAILURE"}

daily_billing_job = dg.define_asset_job(
    name="daily_billing",
    selection=_BILLING - dg.AssetSelection.checks(draft_invoices_verified),
    partitions_def=daily_partitions,
    description=(
        "Compute one UTC day's usage per meter and report it to Stripe exactly once, with the "
        "ledger and invoice checks; Stripe reconciliation runs in the stripe_reconciliation job."
    ),
    tags=RUN_RETRY_TAGS,
)

draft_invoice_verification_job = dg.define_asset_job(
    name="verify_draft_invoice",
    selection=_BILLING,
    partitions_def=daily_partitions,
    description=(
        "Over a draft invoice's period: compute the days' usage, report to Stripe what the "
        "ledger owes (as `daily_billing`), then compare each metered line of the draft with the "
        "source (`draft_invoices_verified`). Launched by `draft_invoice_sensor`."
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
    have a single-run backfill policy, so the range is computed and planned at once. A range
    reaching before the first partition (the 35-day recompute on young data) starts there: a
    run naming a partition that does not exist would fail."""
    first_day = max(first_day, min(FIRST_BILLED_DAY, last_day))
    return {
        "dagster/asset_partition_range_start": first_day.isoformat(),
        "dagster/asset_partition_range_end": last_day.isoformat(),
    }
