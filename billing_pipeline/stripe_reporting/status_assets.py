"""`billing/status`: the billing status table in the Dagster UI, refreshed by a schedule (which
also refreshes `billing/bill_so_far`).

An unpartitioned asset whose latest materialization is the answer to "is billing healthy?" for
the last days: the per-day table, the verdict, and a few numbers (failed, in doubt, unbilled…)
that Dagster plots over time.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_reporting.assets import REPORTING_KEY
from billing_pipeline.stripe_reporting.bill_so_far_assets import BILL_SO_FAR_KEY
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
    days: int = 7  # the last N UTC days, today included


@dg.asset(
    key=STATUS_KEY,
    group_name="billing_status",
    deps=[REPORTING_KEY],
    kinds={"postgres"},
    description=(
        "Billing status of the last days per UTC day and meter: usage computed, billed per the "
        "ledger, unbilled (no billable customer), ledger rows failed / rejected / in doubt / "
        "pending / expired, and Stripe's daily summaries. The verdict says what needs attention."
    ),
)
def billing_status_asset(
    config: StatusConfig, postgres: PostgresResource, stripe: StripeResource
) -> dg.MaterializeResult:
    today = datetime.now(UTC).date()
    first, end = today - timedelta(days=config.days - 1), today + timedelta(days=1)
    lines = billing_status(postgres.engine(), METERS, first, end, stripe.client())
    numeric = HEADER[2:-1]
    metadata: dict[str, Any] = {
        "window": f"{first}..{today}",
        "verdict": verdict(lines),
        "healthy": not any(e.problems() for e in lines),
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
    description=(
        "Refreshes billing/status and billing/bill_so_far every 30 minutes (the bill so far "
        "makes at most max_previews Stripe preview calls a run)."
    ),
)
