"""`billing/status`: the billing status table in the Dagster UI, refreshed by a schedule (which
also refreshes `billing/bill_so_far`).

An unpartitioned asset whose latest materialization is the answer to "is billing healthy?" for
the last days: the per-day table, the verdict, and a few numbers (failed, in doubt, unbilled…)
that Dagster plots over time.
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from billing_pipeline.day_ranges import day_range, last_complete_days
from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_reporting.assets import REPORTING_KEY
from billing_pipeline.stripe_reporting.bill_so_far_assets import BILL_SO_FAR_KEY
from billing_pipeline.stripe_reporting.check_verdict import checked_days, failed_checks
from billing_pipeline.stripe_reporting.status import (
    HEADER,
    WATCHED,
    billing_status,
    totals,
    verdict,
)
from billing_pipeline.usage.meters import METERS

STATUS_KEY = dg.AssetKey(["billing", "status"])


class StatusConfig(dg.Config):
    days: int = 7  # the last N complete UTC days (today, still going on, is not one)


@dg.asset(
    key=STATUS_KEY,
    group_name="billing_status",
    deps=[REPORTING_KEY],
    kinds={"postgres"},
    description=(
        "Billing status of the last complete UTC days (7 by default; today, still going on, is "
        "not one) per day and meter: usage computed, billed per the "
        "ledger, unbilled (no billable customer), ledger rows failed / rejected / in doubt / "
        "pending / expired, and Stripe's daily summaries. The verdict says what needs "
        "attention: each day and meter, and each asset check whose latest evaluation failed "
        "(read from the Dagster instance: reconciliation, usage after an invoice finalized, "
        "dead letters…)."
    ),
)
def billing_status_asset(
    context: dg.AssetExecutionContext,
    config: StatusConfig,
    postgres: PostgresResource,
    stripe: StripeResource,
) -> dg.MaterializeResult:
    now = datetime.now(UTC)
    today = now.date()
    first, end = last_complete_days(config.days, today)
    lines = billing_status(postgres.engine(), METERS, first, end, stripe.client())
    checks = failed_checks(context.instance, checked_days(first, end, now))
    said = verdict(lines, checks)
    numeric = HEADER[2:-1]
    metadata: dict[str, Any] = {
        "window": day_range(first, end),
        "verdict": said,
        "healthy": said == "healthy",
        "failed_checks": len(checks.failed),
        "failed_check_names": dg.MetadataValue.json(sorted({c.check for c in checks.failed})),
        "status": markdown_table(
            HEADER,
            [e.cells() for e in lines] + [("total", *t.cells()[1:]) for t in totals(lines)],
            numeric=numeric,
        ),
    }
    for status in WATCHED:
        metadata[str(status)] = sum(e.rows[status] for e in lines)
    for total in totals(lines):
        # Usage is in each meter's own unit, so it is plotted per meter.
        metadata[f"unbilled/{total.meter}"] = total.unbilled
        # Part of unbilled: held back, several subscriptions of one customer price the meter.
        metadata[f"held/{total.meter}"] = total.held
        metadata[f"usage/{total.meter}"] = total.usage
    return dg.MaterializeResult(metadata=metadata)


billing_status_schedule = dg.ScheduleDefinition(
    name="billing_status_schedule",
    target=dg.AssetSelection.assets(STATUS_KEY, BILL_SO_FAR_KEY),
    cron_schedule="*/30 * * * *",
    execution_timezone="UTC",
    # On from the start, like the billing schedules: an operator reads billing/status to learn
    # whether billing is healthy, so it must not wait for someone to switch its refresh on.
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Refreshes billing/status and billing/bill_so_far every 30 minutes (the bill so far "
        "makes at most max_previews Stripe preview calls a run)."
    ),
)
