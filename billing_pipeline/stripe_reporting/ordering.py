"""Raw `last` meters: make the latest-arriving event of every day that day's value, in day order.

Stripe's docs leave open whether `last` picks the event with the latest timestamp or the one
that arrived last. Timestamps are already right (each revision is later inside its day). For
arrival, the pipeline keeps one invariant per customer: the events that arrived last for each
day carry that day's current value and arrived in day order. Then any period, whatever its
boundaries, ends on its newest day's value under both readings.

A correction of day X (late data, a customer move, a retried failure) breaks the order for every
later day, so those days are re-sent after it, as new revisions with their unchanged value. The
invariant is recomputed from the ledger on every plan (step retries included), so a correction
or a re-assert that failed and is retried later is followed by fresh re-asserts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, text

from billing_pipeline.db.statuses import COUNTED_STATUSES, UNSENT_STATUSES, LedgerStatus
from billing_pipeline.stripe_reporting.identifiers import day_start
from billing_pipeline.stripe_reporting.ledger import STRIPE_WINDOW, LedgerRow, new_row
from billing_pipeline.usage.meters import Meter


@dataclass(frozen=True)
class _Row:
    customer: str
    day: date
    revision: int
    status: str
    target_value: int
    sent_at: datetime | None
    organization_ids: list[int]
    event_timestamp: datetime


def reassert_rows(
    connection: Connection, meter: Meter, first_day: date, end_day: date, now: datetime
) -> list[LedgerRow]:
    """The re-assert revisions the window needs after what was just planned (not inserted)."""
    rows = connection.execute(
        text(
            """
            SELECT stripe_customer_id AS customer, day, revision, status, target_value, sent_at,
                   organization_ids, event_timestamp
            FROM billing.meter_ledger
            WHERE meter = :meter AND event_name = :event_name AND status = ANY(:counted)
              AND day >= greatest(:first_day, CAST(:oldest AS date)) AND day < :end_day
            ORDER BY stripe_customer_id, day, revision
            """
        ),
        {
            "meter": meter.name,
            "event_name": meter.event_name,
            "counted": [s for s in COUNTED_STATUSES if s != LedgerStatus.EXPIRED],
            "first_day": first_day,
            "oldest": (now - STRIPE_WINDOW).date(),
            "end_day": end_day,
        },
    )
    days: dict[str, dict[date, list[_Row]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        days[row.customer][row.day].append(_Row(**row._mapping))
    wanted = [
        (customer, day) for customer, by_day in days.items() for day in _days_to_reassert(by_day)
    ]
    last_revisions = _last_revisions(connection, meter, wanted)
    planned = []
    for customer, day in wanted:
        newest = days[customer][day][-1]
        planned.append(
            new_row(
                meter,
                None,
                customer,
                (day_start(day), day_start(day + timedelta(days=1))),
                # Past every row of the day, rejected, superseded or absent ones included: their
                # identifiers are spent, and reusing one would stop every later plan.
                last_revisions[(customer, day)] + 1,
                newest.target_value,
                newest.target_value,
                newest.organization_ids,
                now,
                newest.event_timestamp,
                reason=_REASON,
            )
        )
    return planned


def _last_revisions(
    connection: Connection, meter: Meter, days: list[tuple[str, date]]
) -> dict[tuple[str, date], int]:
    """The highest revision of each (customer, whole day), whatever its status."""
    if not days:
        return {}
    rows = connection.execute(
        text(
            """
            SELECT l.stripe_customer_id AS customer, l.day, max(l.revision) AS revision
            FROM billing.meter_ledger l
            JOIN unnest(CAST(:customers AS text[]), CAST(:days AS date[])) AS w (customer, day)
                ON l.stripe_customer_id = w.customer AND l.day = w.day
            WHERE l.meter = :meter
            GROUP BY l.stripe_customer_id, l.day
            """
        ),
        {
            "meter": meter.name,
            "customers": [customer for customer, _ in days],
            "days": [day for _, day in days],
        },
    )
    return {(row.customer, row.day): int(row.revision) for row in rows}


_REASON = (
    "re-assert: resent after a correction of an earlier day, so that `last` by arrival ends "
    "on the newest day's value"
)


def _days_to_reassert(by_day: dict[date, list[_Row]]) -> list[date]:
    """Days from the first one out of order onwards that have nothing unsent of their own.

    Unsent rows go out after every sent one, in day order; a day with unsent rows therefore
    arrives after all earlier days, and every later day must arrive after it.
    """
    broken = False
    previous_arrival: datetime | None = None
    reassert = []
    for day in sorted(by_day):
        rows = by_day[day]
        if any(row.status in UNSENT_STATUSES for row in rows):
            broken = True
            continue
        if broken:
            reassert.append(day)
            continue
        sent = [row for row in rows if row.sent_at is not None]
        if not sent:
            continue
        last = max(sent, key=lambda row: row.sent_at or datetime.min)
        arrival = last.sent_at
        assert arrival is not None
        if last.target_value != rows[-1].target_value or (
            previous_arrival is not None and arrival < previous_arrival
        ):
            reassert.append(day)
            broken = True
            continue
        previous_arrival = arrival
    return reassert
