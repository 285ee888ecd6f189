"""Each customer's bill so far: per subscription and meter, the current period's quantity in the
source, in the ledger and in Stripe's invoice preview, with what it should cost.

"What will I pay this month?" has three answers that should agree and often do not yet: the
source (the application's rows, attributed to the subscription with the rules the invoice check
uses, `invoice_usage.LINE_SOURCES_CTE`), what the ledger says Stripe holds (rows `sent`; rows
still `pending`, `failed` or `in_doubt` are counted apart as not yet delivered), and what Stripe
would invoice if the period ended now (`POST /v1/invoices/create_preview`). Showing the three
side by side says where a difference sits: source ≠ ledger is usage the pipeline has not
delivered yet, ledger ≠ Stripe is usage Stripe did not take as the ledger believes.

"So far" is the current period (the subscription's `current_period_start` to its end, as the
webhook flow recorded it) up to the last ended part: whole UTC days that are over, and the parts
of today a period-close run has cut. Today's day in progress is not counted on either side: the
pipeline reports a day once it has ended.

Stripe calls are bounded like reconciliation's: one preview per subscription, at most
`max_previews` per run (subscriptions whose source and ledger disagree first, then by id); the
rest are listed as not previewed, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import stripe as stripe_sdk
from sqlalchemy import Connection, Engine, text

from billing_pipeline.db.statuses import LedgerStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.attribution import attribution_params, customer_parts_cte
from billing_pipeline.stripe_reporting.invoice_list import money, price_amount
from billing_pipeline.stripe_reporting.invoice_usage import LINE_SOURCES_CTE
from billing_pipeline.stripe_reporting.ledger import planned_windows
from billing_pipeline.text_tables import text_table
from billing_pipeline.usage.meters import Meter

DEFAULT_MAX_PREVIEWS = 50
HEADER = (
    "customer",
    "subscription",
    "meter",
    "period start",
    "period end",
    "source",
    "ledger",
    "undelivered rows",
    "stripe preview",
    "expected",
    "stripe amount",
    "note",
)
NUMERIC = ("source", "ledger", "undelivered rows", "stripe preview", "expected", "stripe amount")
NOT_PREVIEWED = "not previewed"

# Subscriptions in a current period that Stripe will invoice; `customer` None: all of them.
_SUBSCRIPTIONS_SQL = """
SELECT stripe_subscription_id AS subscription, stripe_customer_id AS customer,
       current_period_start AS period_start,
       CASE WHEN cancel_at IS NOT NULL AND cancel_at < current_period_end THEN cancel_at
            ELSE current_period_end END AS period_end
FROM subscriptions
WHERE stripe_subscription_id IS NOT NULL AND stripe_customer_id IS NOT NULL
  AND current_period_start IS NOT NULL AND current_period_end IS NOT NULL
  AND ended_at IS NULL AND status = ANY(:invoiced)
  AND (CAST(:customer AS text) IS NULL OR stripe_customer_id = :customer)
ORDER BY stripe_customer_id, stripe_subscription_id
"""
# Statuses whose period ends with an invoice (a trial's and a paused one's do not).
INVOICED_STATUSES = ("active", "past_due", "unpaid")

# The prices each subscription's items carry (as the webhook flow recorded them), by meter.
_PRICES_SQL = """
SELECT p.stripe_subscription_id AS subscription, m.meter, p.stripe_price_id AS price,
       p.unit_amount_decimal AS amount, p.currency
FROM billing.subscription_prices p
JOIN billing.stripe_meters m ON m.stripe_meter_id = p.stripe_meter_id
WHERE p.stripe_subscription_id = ANY(:subscriptions)
"""

_PERIODS_CTE = """
lines AS (
    SELECT p.subscription AS invoice, 1 AS line, p.customer, p.subscription,
           p.period_start, p.period_end
    FROM unnest(CAST(:subscriptions AS text[]), CAST(:customers AS text[]),
                CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]))
        AS p (subscription, customer, period_start, period_end)
)"""

_SOURCE_SQL = f"WITH {{parts}},\n{_PERIODS_CTE},\n{LINE_SOURCES_CTE}\nSELECT * FROM sources"

# What the ledger says Stripe holds for each period, by event timestamp as Stripe bills: per
# slot (a part, or on an hourly meter its hour window) the sent value (raw `sum`: the sent
# differences added up) or the newest sent whole value, then over the period as the meter
# aggregates (`last`: the latest slot Stripe holds a value for). Unsent rows are counted, not added.
_LEDGER_SQL = f"""
WITH {_PERIODS_CTE},
slots AS (
    SELECT l.subscription,
           CASE WHEN m.aggregation_window = 'hour'
                THEN date_trunc('hour', m.event_timestamp, 'UTC') ELSE m.part_start END AS slot,
           sum(m.value) FILTER (WHERE m.status = :sent) AS sent_values,
           (array_agg(m.target_value ORDER BY m.event_timestamp DESC, m.revision DESC)
               FILTER (WHERE m.status = :sent))[1] AS whole_value,
           count(*) FILTER (WHERE m.status = ANY(:undelivered)) AS undelivered,
           bool_or(m.aggregation_window IS NOT NULL) AS whole
    FROM lines l
    JOIN billing.meter_ledger m ON m.meter = :meter AND m.stripe_customer_id = l.customer
        AND m.event_timestamp >= l.period_start AND m.event_timestamp < l.period_end
    GROUP BY 1, 2
)
SELECT subscription, sum(undelivered) AS undelivered,
       CAST(CASE WHEN :last THEN coalesce((array_agg(whole_value ORDER BY slot DESC)
                                           FILTER (WHERE whole_value IS NOT NULL))[1], 0)
                 WHEN bool_or(whole) THEN sum(coalesce(whole_value, 0))
                 ELSE coalesce(sum(sent_values), 0) END AS bigint) AS ledger
FROM slots GROUP BY subscription
"""


@dataclass(frozen=True)
class Period:
    subscription: str
    customer: str
    start: datetime
    end: datetime


@dataclass
class BillLine:
    """One subscription's meter in its current period, so far."""

    customer: str
    subscription: str
    meter: str
    period_start: datetime
    period_end: datetime
    source: int = 0
    ledger: int = 0
    undelivered_rows: int = 0
    stripe: int | None = None  # None: not previewed (cap, error) or no line for the meter
    price: str | None = None  # the subscription's price on the meter, when recorded
    unit_amount_decimal: Decimal | None = None  # None: the price is not known here
    currency: str | None = None
    stripe_amount: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def expected_amount(self) -> int | None:
        """The source so far at the subscription's price, in minor units."""
        if self.unit_amount_decimal is None:
            return None
        return price_amount(self.source, self.unit_amount_decimal)

    def differences(self) -> list[str]:
        found = []
        if self.ledger != self.source:
            undelivered = f", {self.undelivered_rows} ledger rows not delivered yet"
            found.append(
                f"ledger {self.ledger} ≠ source {self.source}"
                + (undelivered if self.undelivered_rows else "")
            )
        if self.stripe is not None and self.stripe != self.source:
            found.append(f"Stripe preview {self.stripe} ≠ source {self.source}")
        return found

    def cells(self) -> tuple[object, ...]:
        def amount(value: int | None) -> str | None:
            return None if value is None else money(value, self.currency or "usd")

        return (
            self.customer,
            self.subscription,
            self.meter,
            self.period_start,
            self.period_end,
            self.source,
            self.ledger,
            self.undelivered_rows,
            self.stripe,
            amount(self.expected_amount),
            amount(self.stripe_amount),
            "; ".join([*self.differences(), *self.notes]) or "agrees",
        )


@dataclass
class BillSoFar:
    lines: list[BillLine]
    previewed: int  # Stripe preview calls made
    not_previewed: list[str]  # subscriptions left out by the cap (or without Stripe)
    now: datetime


def bill_so_far(
    engine: Engine,
    meters: Sequence[Meter],
    stripe: StripeBilling | None,
    *,
    customer: str | None = None,
    max_previews: int = DEFAULT_MAX_PREVIEWS,
    now: datetime | None = None,
) -> BillSoFar:
    """Every invoiced subscription's current period so far (one customer's with `customer`)."""
    now = now or datetime.now(UTC)
    with engine.connect() as connection:
        periods = [
            Period(row.subscription, row.customer, row.period_start, row.period_end)
            for row in connection.execute(
                text(_SUBSCRIPTIONS_SQL),
                {"customer": customer, "invoiced": list(INVOICED_STATUSES)},
            )
        ]
        lines = _database_lines(connection, meters, periods, now)
    subscriptions = [p.subscription for p in periods]
    if stripe is None or max_previews <= 0:
        for line in lines:
            line.notes.append(NOT_PREVIEWED)
        return BillSoFar(lines, 0, subscriptions, now)
    # Where the source and the ledger already disagree Stripe's view matters most: first.
    disagree = {line.subscription for line in lines if line.differences()}
    ordered = sorted(subscriptions, key=lambda s: (s not in disagree, s))
    asked, skipped = ordered[:max_previews], ordered[max_previews:]
    for subscription in asked:
        _add_preview(stripe, subscription, [x for x in lines if x.subscription == subscription])
    for line in lines:
        if line.subscription in skipped:
            line.notes.append(f"{NOT_PREVIEWED} (at most {max_previews} previews a run)")
    return BillSoFar(lines, len(asked), sorted(skipped), now)


def _database_lines(
    connection: Connection, meters: Sequence[Meter], periods: Sequence[Period], now: datetime
) -> list[BillLine]:
    if not periods:
        return []
    windows = planned_windows(connection)
    prices = {
        (row.subscription, row.meter): row
        for row in connection.execute(
            text(_PRICES_SQL), {"subscriptions": [p.subscription for p in periods]}
        )
    }
    priced = {subscription for subscription, _ in prices}
    params = {
        "subscriptions": [p.subscription for p in periods],
        "customers": [p.customer for p in periods],
        "starts": [p.start for p in periods],
        "ends": [p.end for p in periods],
        "now": now,
        "sent": LedgerStatus.SENT,
        "undelivered": [LedgerStatus.PENDING, LedgerStatus.FAILED, LedgerStatus.IN_DOUBT],
    }
    first_day = min(p.start for p in periods).date()
    end_day = min(max(p.end for p in periods), now).date() + timedelta(days=1)
    lines = []
    for meter in meters:
        meter_params = {
            **params,
            **attribution_params(meter, windows.get(meter.name), first_day, end_day),
            "last": meter.aggregation == "last",
        }
        sql = _SOURCE_SQL.format(parts=customer_parts_cte(meter))
        source_rows = connection.execute(text(sql), meter_params)
        sources = {row.invoice: int(row.source) for row in source_rows}
        ledger_rows = connection.execute(text(_LEDGER_SQL), meter_params)
        ledger = {row.subscription: row for row in ledger_rows}
        for period in periods:
            price = prices.get((period.subscription, meter.name))
            if price is None and period.subscription in priced:
                continue  # the subscription prices other meters, not this one
            held = ledger.get(period.subscription)
            line = BillLine(
                customer=period.customer,
                subscription=period.subscription,
                meter=meter.name,
                period_start=period.start,
                period_end=period.end,
                source=sources.get(period.subscription, 0),
                ledger=0 if held is None else int(held.ledger),
                undelivered_rows=0 if held is None else int(held.undelivered),
            )
            if price is not None:
                line.price, line.currency = price.price, price.currency
            if price is not None and price.amount is not None:
                line.unit_amount_decimal = Decimal(price.amount)
            else:
                line.notes.append("price not known (no subscription event recorded its items)")
            lines.append(line)
    return sorted(lines, key=lambda x: (x.customer, x.subscription, x.meter))


def _add_preview(stripe: StripeBilling, subscription: str, lines: list[BillLine]) -> None:
    """One preview call for the subscription; each line takes its price's quantity."""
    try:
        preview = stripe.invoice_preview(subscription)
    except stripe_sdk.StripeError as error:
        for line in lines:
            line.notes.append(f"no preview: {error.user_message or error}")
        return
    by_price = {p.price: p for p in preview}
    for line in lines:
        match = by_price.get(line.price)
        if match is None:
            line.notes.append("the preview has no line for this meter's price")
            continue
        line.stripe, line.stripe_amount = match.quantity, match.amount
        line.currency = line.currency or match.currency


@dataclass(frozen=True)
class MeterTotal:
    """One meter's totals over the lines shown (the numbers the UI plots)."""

    meter: str
    source: int
    ledger: int
    undelivered_rows: int
    stripe: int  # over the previewed lines only
    expected_amount: int  # minor units, over the lines whose price is known
    stripe_amount: int


def totals(result: BillSoFar) -> list[MeterTotal]:
    found = []
    for meter in sorted({line.meter for line in result.lines}):
        mine = [line for line in result.lines if line.meter == meter]
        found.append(
            MeterTotal(
                meter=meter,
                source=sum(line.source for line in mine),
                ledger=sum(line.ledger for line in mine),
                undelivered_rows=sum(line.undelivered_rows for line in mine),
                stripe=sum(line.stripe or 0 for line in mine),
                expected_amount=sum(line.expected_amount or 0 for line in mine),
                stripe_amount=sum(line.stripe_amount or 0 for line in mine),
            )
        )
    return found


def render_text(result: BillSoFar) -> str:
    """The command's output: one row per subscription and meter, a total per meter, and what
    was not previewed."""
    if not result.lines:
        return (
            "no subscription in a billing period yet (`billing-pipeline subscriptions list` "
            "shows each one's status and period)"
        )
    currencies = {line.currency for line in result.lines if line.currency} or {"usd"}
    currency = currencies.pop() if len(currencies) == 1 else None
    rows = [line.cells() for line in result.lines]
    for total in totals(result):
        amounts = (
            (money(total.expected_amount, currency), money(total.stripe_amount, currency))
            if currency
            else ("several currencies", "several currencies")
        )
        rows.append(
            (
                "total",
                None,
                total.meter,
                None,
                None,
                total.source,
                total.ledger,
                total.undelivered_rows,
                total.stripe,
                *amounts,
                None,
            )
        )
    lines = [
        f"bill so far at {result.now:%Y-%m-%d %H:%M:%SZ}: the current period up to the last "
        "ended part (today's day in progress is not counted)",
        text_table([h.upper() for h in HEADER], rows, numeric=[n.upper() for n in NUMERIC]),
        f"Stripe previews: {result.previewed}",
    ]
    if result.not_previewed:
        lines.append(f"not previewed: {', '.join(result.not_previewed)}")
    return "\n".join(lines)
