"""What each finalized invoice billed against what the source says its period held.

Stripe finalizes a period's invoice after its grace period and nothing reported later reaches
it: metered usage cannot be added to a finalized invoice. Any difference between a finalized
line's quantity and the attributed source for that customer, meter and period is therefore
money billed wrongly for good; this module finds each one, with the ledger rows of that period
that reached Stripe after finalization (the usual cause: late readings, a late webhook).
The invoices come from the webhook flow (`billing.invoices`); a line is tied to a declared meter
through its price's `recurring.meter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, text

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.attribution import (
    CUSTOMER_VALUE_SQL,
    attribution_params,
    customer_parts_cte,
)
from billing_pipeline.stripe_reporting.ledger import STRIPE_WINDOW, planned_windows
from billing_pipeline.usage.meters import Meter

_FINALIZED_SQL = """
SELECT id, stripe_customer_id, finalized_at, lines FROM billing.invoices
WHERE finalized_at IS NOT NULL AND finalized_at >= :since AND stripe_customer_id IS NOT NULL
ORDER BY finalized_at, id
"""

_PERIOD_SOURCE_SQL = f"""
WITH {{parts}}
SELECT {CUSTOMER_VALUE_SQL} AS source
FROM customer_parts
WHERE customer = :customer AND part_start >= :start AND part_start < :end
"""

_SENT_AFTER_SQL = """
SELECT coalesce(sum(value), 0)::bigint AS value, count(*) AS rows FROM billing.meter_ledger
WHERE meter = :meter AND stripe_customer_id = :customer AND status = 'sent'
  AND event_timestamp >= :start AND event_timestamp < :end AND sent_at > :finalized
"""


@dataclass(frozen=True)
class InvoiceGap:
    """One finalized line that does not bill what the source holds for its period."""

    invoice: str
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


def invoice_gaps(
    engine: Engine, stripe: StripeBilling, meters: Sequence[Meter], now: datetime | None = None
) -> tuple[int, list[InvoiceGap]]:
    """(lines compared, gaps) over invoices finalized inside Stripe's window."""
    now = now or datetime.now(UTC)
    remote = {m.id: m.event_name for m in stripe.list_meters()}
    by_event = {m.event_name: m for m in meters}
    meter_of_price: dict[str, Meter | None] = {}
    compared, gaps = 0, []
    with engine.connect() as connection:
        windows = planned_windows(connection)
        invoices = connection.execute(text(_FINALIZED_SQL), {"since": now - STRIPE_WINDOW}).all()
        for invoice in invoices:
            for line in invoice.lines:
                price = line.get("price")
                if not price or line.get("start") is None or line.get("end") is None:
                    continue
                if price not in meter_of_price:
                    meter_id = stripe.price_meter(price)
                    meter_of_price[price] = by_event.get(remote.get(meter_id or "", ""))
                meter = meter_of_price[price]
                if meter is None:
                    continue
                compared += 1
                gap = _line_gap(
                    connection,
                    meter,
                    windows.get(meter.name),
                    (invoice.id, invoice.stripe_customer_id, invoice.finalized_at),
                    line,
                )
                if gap.units:
                    gaps.append(gap)
    return compared, gaps


def _line_gap(
    connection: Connection,
    meter: Meter,
    window: str | None,
    invoice: tuple[str, str, datetime],
    line: dict[str, int],
) -> InvoiceGap:
    invoice_id, customer, finalized_at = invoice
    start = datetime.fromtimestamp(line["start"], tz=UTC)
    end = datetime.fromtimestamp(line["end"], tz=UTC)
    params = attribution_params(meter, window, start.date(), end.date() + timedelta(days=1))
    source = connection.execute(
        text(_PERIOD_SOURCE_SQL.format(parts=customer_parts_cte(meter))),
        {
            **params,
            "last": meter.aggregation == "last",
            "customer": customer,
            "start": start,
            "end": end,
        },
    ).scalar_one()
    late = connection.execute(
        text(_SENT_AFTER_SQL),
        {
            "meter": meter.name,
            "customer": customer,
            "start": start,
            "end": end,
            "finalized": finalized_at,
        },
    ).one()
    return InvoiceGap(
        invoice=invoice_id,
        customer=customer,
        meter=meter.name,
        period_start=start,
        period_end=end,
        invoiced=int(line.get("quantity") or 0),
        source=int(source or 0),
        rows_sent_after_finalization=int(late.rows),
    )
