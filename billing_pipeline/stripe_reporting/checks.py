"""The operator's view of the ledger, as asset checks on `stripe/meter_events`.

- `ledger_failed_rows`, `ledger_stale_pending_rows`, `ledger_expired_rows`,
  `ledger_in_doubt_rows`: rows that need a person, each listing identifiers, customers,
  organizations and reasons;
- `unbilled_usage`: usage no Stripe customer pays for (no billable subscription that day), with
  the reason; billed by the next run once a subscription covers the day;
- `subscriptions_sharing_a_meter`: customers whose several subscriptions price one meter (the
  usage is held back: Stripe would bill it once per subscription), with what is at stake;
- `stripe_reconciliation` (in `reconciliation_check.py`): Stripe against the source.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import LedgerStatus
from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_reporting.assets import REPORTING_KEY
from billing_pipeline.stripe_reporting.attribution import attribution_params, organization_parts_sql
from billing_pipeline.stripe_reporting.draft_invoices import draft_findings
from billing_pipeline.stripe_reporting.invoice_usage import invoice_gaps
from billing_pipeline.stripe_reporting.ledger import STRIPE_WINDOW, planned_windows
from billing_pipeline.stripe_reporting.reconciliation_check import stripe_reconciliation
from billing_pipeline.stripe_reporting.shared_meters import shared_meters
from billing_pipeline.usage.meters import METERS

ROWS_SHOWN = 50
STALE_PENDING_AFTER = timedelta(hours=1)
# Expired rows are permanent (Stripe will never take them), so the check stays red for a week
# after the last one and then only counts them: long enough to be seen, not forever.
EXPIRED_ATTENTION = timedelta(days=7)


# A rejected row stays in the ledger as history; it needs attention only until its day's usage
# went out again: a later revision of the same (meter, customer, day) sent, or a row of the same
# meter and day for another customer sent for any of its organizations (the customer was fixed).
# The two ways out are two subqueries, the usual one (a later revision for the same customer)
# first: it is one probe of the revision index, where the other scans the meter's day; as one
# subquery with an OR, every rejected row ever recorded scanned its whole day at each check.
UNRESOLVED_FAILURE = """
    status = :failed
    OR (status = :rejected AND NOT EXISTS (
        SELECT 1 FROM billing.meter_ledger later
        WHERE later.meter = meter_ledger.meter
          AND later.stripe_customer_id = meter_ledger.stripe_customer_id
          AND later.day = meter_ledger.day
          AND later.revision > meter_ledger.revision
          AND later.status = :sent)
        AND NOT EXISTS (
        SELECT 1 FROM billing.meter_ledger later
        WHERE later.meter = meter_ledger.meter
          AND later.day = meter_ledger.day
          AND later.status = :sent
          AND later.stripe_customer_id <> meter_ledger.stripe_customer_id
          AND later.organization_ids && meter_ledger.organization_ids))
    OR (status = :cancelling AND error_code IS NOT NULL)
    OR (status = :uncorrectable AND NOT EXISTS (
        SELECT 1 FROM billing.meter_ledger later
        WHERE later.meter = meter_ledger.meter
          AND later.stripe_customer_id = meter_ledger.stripe_customer_id
          AND later.day = meter_ledger.day AND later.part_start = meter_ledger.part_start
          AND later.revision > meter_ledger.revision))
"""
_STATUSES = {
    "failed": LedgerStatus.FAILED,
    "rejected": LedgerStatus.REJECTED,
    "sent": LedgerStatus.SENT,
    "pending": LedgerStatus.PENDING,
    "expired": LedgerStatus.EXPIRED,
    "in_doubt": LedgerStatus.IN_DOUBT,
    "cancelling": LedgerStatus.CANCELLING,
    "uncorrectable": LedgerStatus.UNCORRECTABLE,
}


def without_stripe_key(what: str) -> dg.AssetCheckResult:
    """A check that needs Stripe, run without a key: a warning saying what cannot be done."""
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"STRIPE_SECRET_KEY is not set: {what}",
    )


def _attention_result(
    engine: Engine,
    where: str,
    params: dict[str, Any],
    severity: dg.AssetCheckSeverity,
    extra: dict[str, Any] | None = None,
) -> dg.AssetCheckResult:
    params = {**_STATUSES, **params}
    with engine.connect() as connection:
        total, customers = connection.execute(
            text(
                "SELECT count(*), count(DISTINCT stripe_customer_id) "
                f"FROM billing.meter_ledger WHERE {where}"
            ),
            params,
        ).one()
        organizations = connection.execute(
            text(
                "SELECT coalesce(array_agg(DISTINCT o ORDER BY o), '{}') "
                f"FROM billing.meter_ledger, unnest(organization_ids) AS o WHERE {where}"
            ),
            params,
        ).scalar_one()
        # Every customer and day named, not only the rows shown: what alerts report.
        customer_ids, days = connection.execute(
            text(
                "SELECT coalesce(array_agg(DISTINCT stripe_customer_id "
                "ORDER BY stripe_customer_id), '{}'), "
                "coalesce(array_agg(DISTINCT day ORDER BY day), '{}') "
                f"FROM billing.meter_ledger WHERE {where}"
            ),
            params,
        ).one()
        rows = connection.execute(
            text(
                "SELECT identifier, meter, organization_ids, day, stripe_customer_id, value, "
                "status_reason, error_code "
                f"FROM billing.meter_ledger WHERE {where} "
                "ORDER BY updated_at DESC, identifier LIMIT :limit"
            ),
            {**params, "limit": ROWS_SHOWN},
        ).all()
    return dg.AssetCheckResult(
        passed=int(total) == 0,
        severity=severity,
        metadata={
            "rows": int(total),
            "customers": int(customers),
            "organization_ids": dg.MetadataValue.json(list(organizations)),
            "customer_ids": dg.MetadataValue.json(list(customer_ids)),
            "days": dg.MetadataValue.json([day.isoformat() for day in days]),
            "identifiers": dg.MetadataValue.json([row.identifier for row in rows]),
            "details": markdown_table(
                ("identifier", "customer", "organizations", "day", "value", "code", "reason"),
                [
                    (
                        f"`{row.identifier}`",
                        row.stripe_customer_id,
                        ", ".join(map(str, row.organization_ids)),
                        row.day,
                        row.value,
                        row.error_code,
                        row.status_reason,
                    )
                    for row in rows
                ],
            ),
            **(extra or {}),
        },
    )


@dg.asset_check(
    asset=REPORTING_KEY,
    name="ledger_failed_rows",
    description=(
        "Fails while any meter event is `failed` in billing.meter_ledger (Stripe rejected the "
        "call, or the last attempt hit a transient error: the next billing run resends it), or "
        "`rejected` with no later revision sent (Stripe accepted it but reported it invalid "
        "afterwards, in a meter error report: the next run bills the amount under a new "
        "revision), or `cancelling` with an error (a cancel Stripe refused: the customer's "
        "meter sends nothing until it is resolved), or `uncorrectable` (usage went down after "
        "Stripe's 24 h cancel window on a raw `sum` meter: nothing negative is sent, the "
        "customer is over-billed by -value; credit them, see docs/operations.md). Lists "
        "identifiers, customers, organizations, Stripe error codes and reasons; fix the cause "
        "first (e.g. a missing customer)."
    ),
)
def ledger_failed_rows(postgres: PostgresResource) -> dg.AssetCheckResult:
    return _attention_result(postgres.engine(), UNRESOLVED_FAILURE, {}, dg.AssetCheckSeverity.ERROR)


@dg.asset_check(
    asset=REPORTING_KEY,
    name="ledger_stale_pending_rows",
    description=(
        f"Fails while a meter event has been `pending` for more than {STALE_PENDING_AFTER}: it "
        "was planned but no run delivered it (a crashed or cancelled run). Re-materialize any "
        "day: every run sends what is owed inside Stripe's window."
    ),
)
def ledger_stale_pending_rows(postgres: PostgresResource) -> dg.AssetCheckResult:
    cutoff = datetime.now(UTC) - STALE_PENDING_AFTER
    return _attention_result(
        postgres.engine(),
        "status = :pending AND created_at < :cutoff",
        {"cutoff": cutoff},
        dg.AssetCheckSeverity.WARN,
    )


@dg.asset_check(
    asset=REPORTING_KEY,
    name="ledger_in_doubt_rows",
    description=(
        "Fails while a meter event of a raw `sum` meter is `in_doubt`: it was attempted more "
        "than 23 hours ago and never confirmed, so Stripe no longer deduplicates it and a "
        "resend could bill it twice. Each run settles such rows against Stripe's daily "
        "summaries (sent if Stripe's total includes it, absent and re-billed if not); the rows "
        "listed here could not be settled (Stripe's total matches neither). Compare Stripe's "
        "summary for the customer and day, then set the row to `sent` or `absent`."
    ),
)
def ledger_in_doubt_rows(postgres: PostgresResource) -> dg.AssetCheckResult:
    return _attention_result(
        postgres.engine(), "status = :in_doubt", {}, dg.AssetCheckSeverity.ERROR
    )


@dg.asset_check(
    asset=REPORTING_KEY,
    name="ledger_expired_rows",
    description=(
        "Warns while meter events were marked `expired` in the last "
        f"{EXPIRED_ATTENTION.days} days: their day is outside Stripe's 35-day window, so the "
        "usage (often a late correction) was not billed and never will be through meters. "
        "Lists them for a manual invoice item or credit; `expired_total` counts all of them."
    ),
)
def ledger_expired_rows(postgres: PostgresResource) -> dg.AssetCheckResult:
    engine = postgres.engine()
    since = datetime.now(UTC) - EXPIRED_ATTENTION
    with engine.connect() as connection:
        expired_total = connection.execute(
            text("SELECT count(*) FROM billing.meter_ledger WHERE status = :expired"),
            {"expired": LedgerStatus.EXPIRED},
        ).scalar_one()
    return _attention_result(
        engine,
        "status = :expired AND updated_at >= :since",
        {"since": since},
        dg.AssetCheckSeverity.WARN,
        {"expired_total": int(expired_total)},
    )


@dg.asset_check(
    asset=REPORTING_KEY,
    name="unbilled_usage",
    description=(
        "Lists the usage inside Stripe's 35-day window that no Stripe customer pays for: "
        "organizations without a subscription (free tier) and organizations whose "
        "subscription does not bill that day (not started, ended, no Stripe customer yet, or a "
        "status that does not bill then: incomplete, incomplete_expired, paused), and the "
        "usage held back because several subscriptions of its customer price the meter (see "
        "`subscriptions_sharing_a_meter`). Warns while an "
        "organization that has a subscription has unbilled usage (often a webhook not applied "
        "yet): once the subscription covers the day, the next billing run bills it."
    ),
)
def unbilled_usage(postgres: PostgresResource) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    rows: list[Any] = []
    with postgres.engine().connect() as connection:
        windows = planned_windows(connection)
        for meter in METERS:
            rows += connection.execute(
                text(
                    f"SELECT :meter AS meter, * FROM ({organization_parts_sql(meter)}) AS o "
                    "WHERE customer IS NULL AND value <> 0 AND part_end <= :now "
                    "ORDER BY part_start DESC, organization_id"
                ),
                {
                    **attribution_params(
                        meter,
                        windows.get(meter.name),
                        (now - STRIPE_WINDOW).date(),
                        now.date() + timedelta(days=1),
                    ),
                    # A part still going on (today's, computed by a period-close run) is not
                    # over yet: it is neither billed nor unbilled.
                    "now": now,
                },
            ).all()
    with_subscription = [row for row in rows if not row.reason.startswith("no subscription")]
    return dg.AssetCheckResult(
        passed=not with_subscription,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows": len(rows),
            "with_a_subscription": len(with_subscription),
            "days": dg.MetadataValue.json(sorted({r.day.isoformat() for r in with_subscription})),
            "organization_ids": dg.MetadataValue.json(sorted({r.organization_id for r in rows})),
            "details": markdown_table(
                ("meter", "day", "from", "until", "organization", "value", "reason"),
                [
                    (
                        r.meter,
                        r.day,
                        f"{r.part_start:%H:%M:%S}",
                        f"{r.part_end:%H:%M:%S}",
                        r.organization_id,
                        r.value,
                        r.reason,
                    )
                    for r in sorted(rows, key=lambda r: (r.reason, r.day))[:ROWS_SHOWN]
                ],
                numeric=("organization", "value"),
            ),
        },
    )


@dg.asset_check(
    asset=REPORTING_KEY,
    name="usage_after_invoice_finalized",
    description=(
        "Compares every invoice line finalized inside Stripe's window (from the webhook flow's "
        "`invoice.finalized`) with the attributed source for that customer, meter and billing "
        "period, and lists each line that bills other units than the source holds, with the "
        "ledger rows of that period that reached Stripe after the invoice was finalized, and "
        "what its draft's verification found (`draft_invoices_verified`: the line recorded "
        "unfixable, or verified at its last look and changed after). Stripe "
        "cannot add metered usage to a finalized invoice: see docs/operations.md, 'Usage after "
        "an invoice was finalized'."
    ),
)
def usage_after_invoice_finalized(
    postgres: PostgresResource, stripe: StripeResource
) -> dg.AssetCheckResult:
    client = stripe.client()
    if client is None:
        return without_stripe_key("invoice lines cannot be tied to meters")
    engine = postgres.engine()
    compared, gaps = invoice_gaps(engine, client, METERS)
    drafts = draft_findings(engine, [(g.invoice, g.line) for g in gaps])
    return dg.AssetCheckResult(
        passed=not gaps,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "lines_compared": compared,
            "lines_with_gap": len(gaps),
            "units_missing": sum(g.units for g in gaps if g.units > 0),
            "units_overbilled": -sum(g.units for g in gaps if g.units < 0),
            "customer_ids": dg.MetadataValue.json(sorted({g.customer for g in gaps})),
            "details": markdown_table(
                (
                    "customer",
                    "period",
                    "meter",
                    "invoice",
                    "invoiced",
                    "source",
                    "units",
                    "rows sent after finalization",
                    "as a draft",
                ),
                [
                    (
                        g.customer,
                        f"{g.period_start:%Y-%m-%d %H:%M}..{g.period_end:%Y-%m-%d %H:%M}",
                        g.meter,
                        g.invoice,
                        g.invoiced,
                        g.source,
                        g.units,
                        g.rows_sent_after_finalization,
                        drafts[(g.invoice, g.line)],
                    )
                    for g in gaps[:ROWS_SHOWN]
                ],
                numeric=("invoiced", "source", "units", "rows sent after finalization"),
            ),
        },
    )


@dg.asset_check(
    asset=REPORTING_KEY,
    name="subscriptions_sharing_a_meter",
    description=(
        "Fails (error) while a customer has two or more billable subscriptions with prices on "
        "the same Stripe meter on a day inside Stripe's window: Stripe's meters aggregate per "
        "customer, so each of them bills the customer's whole usage. The pipeline reports "
        "nothing new for those days; each row names the customer, the subscriptions, the days, "
        "the units held back, the units Stripe already holds from before (billed by every one "
        "of the subscriptions) and what each subscription's price makes of them. See README, "
        "'Several subscriptions on one meter'."
    ),
)
def subscriptions_sharing_a_meter(postgres: PostgresResource) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    engine = postgres.engine()
    with engine.connect() as connection:
        windows = planned_windows(connection)
    found = shared_meters(
        engine, METERS, windows, (now - STRIPE_WINDOW).date(), now.date() + timedelta(days=1)
    )
    return dg.AssetCheckResult(
        passed=not found,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            None
            if not found
            else "; ".join(
                f"customer {f.customer}: subscriptions {', '.join(f.subscriptions)} all price "
                f"{f.meter} on {len(f.days)} days (from {f.days[0]} to {f.days[-1]}): "
                f"{f.units} units held back, {f.reported} already in Stripe and billed by "
                f"each; at stake {f.at_stake}"
                for f in found[:ROWS_SHOWN]
            )
        ),
        metadata={
            "customers": dg.MetadataValue.json(sorted({f.customer for f in found})),
            "days": dg.MetadataValue.json(sorted({d.isoformat() for f in found for d in f.days})),
            "units_held": sum(f.units for f in found),
            "units_billed_more_than_once": sum(f.reported for f in found),
            "details": markdown_table(
                ("customer", "meter", "subscriptions", "days", "held", "in Stripe", "at stake"),
                [
                    (
                        f.customer,
                        f.meter,
                        ", ".join(f.subscriptions),
                        ", ".join(map(str, f.days)),
                        f.units,
                        f.reported,
                        f.at_stake,
                    )
                    for f in found[:ROWS_SHOWN]
                ],
                numeric=("held", "in Stripe"),
            ),
        },
    )


ledger_checks = [
    ledger_failed_rows,
    ledger_stale_pending_rows,
    ledger_in_doubt_rows,
    ledger_expired_rows,
    unbilled_usage,
    subscriptions_sharing_a_meter,
]
reporting_checks = [stripe_reconciliation, usage_after_invoice_finalized, *ledger_checks]
