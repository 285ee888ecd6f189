"""What each finalized invoice billed against what the source says its period held.

Stripe finalizes a period's invoice after its grace period and nothing reported later reaches
it: metered usage cannot be added to a finalized invoice. Any difference between a finalized
line's quantity and the attributed source for that customer, meter and period is therefore
money billed wrongly for good; this module finds each one, with the ledger rows of that period
that reached Stripe after finalization (the usual cause: late readings, a late webhook).
The invoices come from the webhook flow (`billing.invoices`); a line is tied to a declared meter
through its price's `recurring.meter`.

A line is compared with the usage of the organizations of the line's own subscription (all of
the customer's when the subscription is not linked here), not with the customer's total: Stripe
bills a meter's whole customer total on every subscription that prices it, so with two such
subscriptions each line holds the total, and only a comparison per subscription shows that the
customer pays it twice (README, "Several subscriptions on one meter"). Held parts count as the
organization's usage: the line misses them, and the gap says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from billing_pipeline.db.statuses import LedgerStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.attribution import (
    CUSTOMER_VALUE_SQL,
    attribution_params,
    customer_parts_cte,
)
from billing_pipeline.stripe_reporting.ledger import STRIPE_WINDOW, planned_windows
from billing_pipeline.usage.meters import Meter

# Which invoices a reader compares: the finalized ones inside Stripe's window (the invoice
# check), or the drafts it names (draft verification, draft_invoices.py).
FINALIZED_INVOICES = "i.finalized_at IS NOT NULL AND i.finalized_at >= :since"
DRAFT_INVOICES = "i.status = 'draft' AND i.finalized_at IS NULL AND i.id = ANY(:invoices)"

# The lines of those invoices that bill one of the meter's prices.
_LINES_SQL = """
SELECT i.id AS invoice, e.n AS line, i.stripe_customer_id AS customer, i.finalized_at,
       i.stripe_subscription_id AS subscription,
       to_timestamp(CAST(e.l ->> 'start' AS bigint)) AS period_start,
       to_timestamp(CAST(e.l ->> 'end' AS bigint)) AS period_end,
       coalesce(CAST(e.l ->> 'quantity' AS bigint), 0) AS invoiced
FROM billing.invoices i CROSS JOIN LATERAL jsonb_array_elements(i.lines) WITH ORDINALITY AS e (l, n)
WHERE {invoices} AND i.stripe_customer_id IS NOT NULL
  AND e.l ->> 'price' = ANY(:prices) AND e.l ->> 'start' IS NOT NULL AND e.l ->> 'end' IS NOT NULL
"""

_PRICES_SQL = """
SELECT DISTINCT e.l ->> 'price' AS price
FROM billing.invoices i CROSS JOIN LATERAL jsonb_array_elements(i.lines) AS e (l)
WHERE {invoices} AND e.l ->> 'price' IS NOT NULL
"""

_SPAN_SQL = (
    f"SELECT min(period_start) AS first, max(period_end) AS last FROM ({_LINES_SQL}) AS lines"
)

# CTE `sources`: the attributed source of each row of a `lines` CTE (invoice, line, customer,
# subscription, period_start, period_end) over its subscription's organizations, counting the
# parts ended by `:now` (a finalized period's are all ended; the bill so far counts only those).
# Shared by the invoice check, draft verification and the bill so far (`bill_so_far.py`), so a
# line is always compared with one definition of its period's source.
LINE_SOURCES_CTE = f"""
line_parts AS (
    SELECT l.invoice, l.line, o.part_start, sum(o.value) AS target
    FROM lines l
    JOIN organization_parts o ON coalesce(o.customer, o.held_customer) = l.customer
        AND o.part_start >= l.period_start AND o.part_start < l.period_end
        AND o.part_end <= :now
    WHERE NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.stripe_subscription_id = l.subscription)
       OR o.organization_id IN (
           SELECT s.organization_id FROM subscriptions s
           WHERE s.stripe_subscription_id = l.subscription)
    GROUP BY l.invoice, l.line, o.part_start
),
sources AS (
    SELECT l.invoice, l.line, coalesce({CUSTOMER_VALUE_SQL}, 0) AS source
    FROM lines l
    LEFT JOIN line_parts c ON c.invoice = l.invoice AND c.line = l.line
    GROUP BY l.invoice, l.line
)"""

# Every line with the attributed source of its customer and period, and the ledger rows of
# that period sent after the invoice was finalized (none for a draft): one statement per meter,
# whatever the number of invoices.
_SOURCES_SQL = f"""
WITH {{parts}},
lines AS ({_LINES_SQL}),
{LINE_SOURCES_CTE},
late AS (
    SELECT l.invoice, l.line, count(*) AS rows
    FROM lines l
    JOIN billing.meter_ledger m ON m.meter = :meter AND m.stripe_customer_id = l.customer
        AND m.status = :sent AND m.event_timestamp >= l.period_start
        AND m.event_timestamp < l.period_end AND m.sent_at > l.finalized_at
    GROUP BY l.invoice, l.line
)
SELECT l.*, s.source, coalesce(late.rows, 0) AS rows_sent_after_finalization
FROM lines l
JOIN sources s ON s.invoice = l.invoice AND s.line = l.line
LEFT JOIN late ON late.invoice = l.invoice AND late.line = l.line
ORDER BY l.finalized_at, l.invoice, l.line
"""


@dataclass(frozen=True)
class LineSource:
    """One invoice line tied to a declared meter, with what the source says it must bill."""

    invoice: str
    line: int  # the line's position on the invoice, from 1
    customer: str
    subscription: str | None
    meter: Meter
    stripe_meter_id: str
    period_start: datetime
    period_end: datetime
    invoiced: int  # the quantity on the invoice as the webhook flow last recorded it
    source: int
    rows_sent_after_finalization: int


@dataclass(frozen=True)
class InvoiceGap:
    """One finalized line that does not bill what the source holds for its period."""

    invoice: str
    line: int
    customer: str
    meter: str
    period_start: datetime
    period_end: datetime
    invoiced: int
    source: int
    rows_sent_after_finalization: int

    @property
    def units(self) -> int:
        """Units the invoice missed (negative: billed beyond the source)."""
        return self.source - self.invoiced


def price_meters(
    connection: Connection, stripe: StripeBilling, prices: Iterable[str]
) -> dict[str, str | None]:
    """The Stripe meter each price bills (None: not metered).

    Every invoice line names its price, and with a price per customer there are as many prices
    as customers: one `GET /v1/prices/{id}` each made this check cost a Stripe read per
    customer every day (200,000 at 100,000 organizations, hours of Stripe's read budget). The
    webhook flow already keeps the meter of every price a subscription lists
    (`billing.subscription_prices`, from `customer.subscription.*` events), and a price's
    `recurring.meter` cannot change, so Stripe is asked only about prices no subscription lists
    any more: one call per such price.
    """
    wanted = list(dict.fromkeys(prices))
    known: dict[str, str | None] = {
        row.stripe_price_id: row.stripe_meter_id
        for row in connection.execute(
            text(
                "SELECT DISTINCT ON (stripe_price_id) stripe_price_id, stripe_meter_id "
                "FROM billing.subscription_prices WHERE stripe_price_id = ANY(:prices) "
                "ORDER BY stripe_price_id, event_created DESC"
            ),
            {"prices": wanted},
        )
    }
    return {
        price: known[price] if price in known else stripe.price_meter(price) for price in wanted
    }


def line_sources(
    engine: Engine,
    stripe: StripeBilling,
    meters: Sequence[Meter],
    invoices: str,
    params: dict[str, Any],
) -> list[LineSource]:
    """The metered lines of the invoices `invoices` selects (FINALIZED_INVOICES or
    DRAFT_INVOICES, with their `params` and `now`, the instant whose ended parts count), each
    with its attributed source."""
    remote = {m.id: m.event_name for m in stripe.list_meters()}
    by_event = {m.event_name: m for m in meters}
    found: list[LineSource] = []
    with engine.connect() as connection:
        windows = planned_windows(connection)
        meter_ids = price_meters(
            connection,
            stripe,
            connection.execute(text(_PRICES_SQL.format(invoices=invoices)), params).scalars(),
        )
        meter_of_price = {
            price: by_event.get(remote.get(meter_id or "", ""))
            for price, meter_id in meter_ids.items()
        }
        for meter in meters:
            prices = [price for price, m in meter_of_price.items() if m is meter]
            if not prices:
                continue
            lines = {**params, "prices": prices}
            span = connection.execute(text(_SPAN_SQL.format(invoices=invoices)), lines).one()
            if span.first is None:
                continue
            first_day, end_day = span.first.date(), span.last.date() + timedelta(days=1)
            rows = connection.execute(
                text(_SOURCES_SQL.format(parts=customer_parts_cte(meter), invoices=invoices)),
                {
                    **attribution_params(meter, windows.get(meter.name), first_day, end_day),
                    **lines,
                    "last": meter.aggregation == "last",
                    "sent": LedgerStatus.SENT,
                },
            ).all()
            stripe_meter_id = next(i for i, name in remote.items() if name == meter.event_name)
            found += [
                LineSource(
                    invoice=row.invoice,
                    line=int(row.line),
                    customer=row.customer,
                    subscription=row.subscription,
                    meter=meter,
                    stripe_meter_id=stripe_meter_id,
                    period_start=row.period_start,
                    period_end=row.period_end,
                    invoiced=int(row.invoiced),
                    source=int(row.source),
                    rows_sent_after_finalization=int(row.rows_sent_after_finalization),
                )
                for row in rows
            ]
    return found


def invoice_gaps(
    engine: Engine, stripe: StripeBilling, meters: Sequence[Meter], now: datetime | None = None
) -> tuple[int, list[InvoiceGap]]:
    """(lines compared, gaps) over invoices finalized inside Stripe's window."""
    now = now or datetime.now(UTC)
    lines = line_sources(
        engine, stripe, meters, FINALIZED_INVOICES, {"since": now - STRIPE_WINDOW, "now": now}
    )
    return len(lines), [
        InvoiceGap(
            invoice=s.invoice,
            line=s.line,
            customer=s.customer,
            meter=s.meter.name,
            period_start=s.period_start,
            period_end=s.period_end,
            invoiced=s.invoiced,
            source=s.source,
            rows_sent_after_finalization=s.rows_sent_after_finalization,
        )
        for s in lines
        if s.source != s.invoiced
    ]
