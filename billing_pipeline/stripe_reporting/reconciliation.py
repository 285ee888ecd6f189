"""Reconcile the ledger with Stripe's own numbers, per meter, customer and UTC day.

The ledger says what Stripe should hold; Stripe's meter event summaries
(`value_grouping_window=day`) say what it does hold. For a `sum` meter the day's total must equal
the sum of the sent values (revisions are differences); for a `last` meter it must equal the
newest sent revision's target value. Anything else is drift: an event Stripe dropped or refused
later, an event someone else sent for our customer, a row we think unsent that Stripe has.

Stripe's summaries are eventually consistent, so a (meter, customer, day) whose ledger rows
changed within the settle window is reported as settling, not as drift; the reconciliation
schedule checks it again hours later.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, text

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.identifiers import day_start
from billing_pipeline.usage.meters import Meter

SETTLE_WINDOW = timedelta(minutes=30)
# Stripe reports float totals; our values are whole numbers.
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Expectation:
    """What the ledger says Stripe holds for one (meter, customer, day)."""

    meter: str
    customer: str
    day: date
    value: int
    organizations: tuple[int, ...]
    settling: bool


@dataclass(frozen=True)
class Drift:
    meter: str
    customer: str
    day: date
    organizations: tuple[int, ...]
    ledger: int
    stripe: float


@dataclass
class Reconciliation:
    """The outcome for a window: how much was compared, what is settling, what drifted."""

    compared: int = 0
    settling: int = 0
    drifts: list[Drift] = field(default_factory=list)
    missing_meters: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drifts and not self.missing_meters


_EXPECTATIONS_SQL = """
SELECT meter, stripe_customer_id AS customer, day,
       array_agg(DISTINCT organization_id ORDER BY organization_id) AS organizations,
       coalesce(sum(value) FILTER (WHERE status = 'sent'), 0) AS sent_sum,
       (array_agg(target_value ORDER BY revision DESC)
            FILTER (WHERE status = 'sent'))[1] AS newest_sent_target,
       max(updated_at) >= :settled_before AS settling
FROM billing.meter_ledger
WHERE meter = ANY(:meters) AND day >= :first_day AND day < :end_day
  AND stripe_customer_id IS NOT NULL
GROUP BY meter, stripe_customer_id, day
"""


def ledger_expectations(
    engine: Engine,
    meters: Sequence[Meter],
    first_day: date,
    end_day: date,
    settled_before: datetime,
) -> list[Expectation]:
    """Every (meter, customer, day) in the window that the ledger has a customer for.

    Skipped rows (no customer) are left out: Stripe never heard of them. Failed, pending and
    expired rows count as not billed, which is what Stripe should show for them.
    """
    aggregation = {meter.name: meter.aggregation for meter in meters}
    with engine.connect() as connection:
        rows = connection.execute(
            text(_EXPECTATIONS_SQL),
            {
                "meters": list(aggregation),
                "first_day": first_day,
                "end_day": end_day,
                "settled_before": settled_before,
            },
        ).all()
    return [
        Expectation(
            meter=row.meter,
            customer=row.customer,
            day=row.day,
            value=int(
                row.sent_sum if aggregation[row.meter] == "sum" else (row.newest_sent_target or 0)
            ),
            organizations=tuple(row.organizations),
            settling=bool(row.settling),
        )
        for row in rows
    ]


def reconcile(
    engine: Engine,
    billing: StripeBilling,
    meters: Sequence[Meter],
    first_day: date,
    end_day: date,
    *,
    settle_window: timedelta = SETTLE_WINDOW,
    now: datetime | None = None,
) -> Reconciliation:
    """Compare the ledger with Stripe for [first_day, end_day), one summary call per customer
    and meter for the whole window."""
    now = now or datetime.now(UTC)
    result = Reconciliation()
    expected = ledger_expectations(engine, meters, first_day, end_day, now - settle_window)
    by_pair: dict[tuple[str, str], dict[date, Expectation]] = defaultdict(dict)
    for item in expected:
        by_pair[(item.meter, item.customer)][item.day] = item
    remote = {m.event_name: m.id for m in billing.list_meters() if m.status == "active"}
    event_names = {meter.name: meter.event_name for meter in meters}
    for (meter_name, customer), days in sorted(by_pair.items()):
        meter_id = remote.get(event_names[meter_name])
        if meter_id is None:
            if meter_name not in result.missing_meters:
                result.missing_meters.append(meter_name)
            continue
        stripe_days = billing.daily_totals(
            meter_id, customer, day_start(first_day), day_start(end_day)
        )
        organizations = tuple(sorted({o for e in days.values() for o in e.organizations}))
        for day in sorted(set(days) | {d for d, v in stripe_days.items() if v}):
            expectation = days.get(day)
            stripe_value = stripe_days.get(day, 0.0)
            result.compared += 1
            ledger_value = expectation.value if expectation else 0
            if abs(stripe_value - ledger_value) <= TOLERANCE:
                continue
            if expectation is not None and expectation.settling:
                result.settling += 1
                continue
            result.drifts.append(
                Drift(
                    meter=meter_name,
                    customer=customer,
                    day=day,
                    organizations=expectation.organizations if expectation else organizations,
                    ledger=ledger_value,
                    stripe=stripe_value,
                )
            )
    return result
