"""Raw `sum` meters: rows whose outcome is unknown once Stripe's 24 h identifier dedupe passed.

A row attempted (its `first_attempted_at` committed before the call) but never confirmed may or
may not be in Stripe: the worker may have died after Stripe accepted it. Within ~24 h a resend
is safe, Stripe answers "duplicate". After that a resend of a difference could bill it twice,
so the row becomes `in_doubt` and is never resent blindly. It is settled against Stripe's daily
summary for its customer and day:

- Stripe's total equals the sent rows plus it: it arrived, marked `sent`;
- Stripe's total equals the sent rows without it: it never arrived, marked `absent` (not
  counted, so the next plan bills the amount again under a new revision);
- anything else (Stripe's total matches neither, or several in-doubt rows could explain it):
  it stays `in_doubt`, listed by the `ledger_in_doubt_rows` check for a person to decide.

Whole-value meters (raw `last`, pre-aggregated) never need this: resending a whole value at any
age is harmless, so their rows are simply resent.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import UNSENT_STATUSES, LedgerStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.identifiers import day_start

# Stripe forgets identifiers after about 24 hours; an hour's margin.
DEDUPE_SAFE = timedelta(hours=23)
# Summaries lag a little behind accepted events: settle only days that were quiet this long.
SUMMARY_SETTLE = timedelta(minutes=30)
# Beyond this many in-doubt rows in one day, finding which ones arrived is left to a person.
MAX_CANDIDATES = 12
TOLERANCE = 1e-6

IN_DOUBT_REASON = (
    "attempted more than 23 h ago and never confirmed: Stripe no longer deduplicates its "
    "identifier, so it is not resent; settled against Stripe's daily summary"
)


def mark_in_doubt(engine: Engine, meters: Sequence[str], now: datetime | None = None) -> int:
    """Mark the unconfirmed, long-attempted rows of raw `sum` meters in doubt; return how many."""
    now = now or datetime.now(UTC)
    with engine.begin() as connection:
        result = connection.execute(
            text(
                """
                UPDATE billing.meter_ledger
                SET status = :in_doubt, status_reason = :reason, updated_at = now()
                WHERE status = ANY(:unsent) AND meter = ANY(:meters)
                  AND aggregation_window IS NULL AND first_attempted_at < :cutoff
                """
            ),
            {
                "in_doubt": LedgerStatus.IN_DOUBT,
                "reason": IN_DOUBT_REASON,
                "unsent": list(UNSENT_STATUSES),
                "meters": list(meters),
                "cutoff": now - DEDUPE_SAFE,
            },
        )
        return result.rowcount


@dataclass(frozen=True)
class _DayRows:
    meter: str
    customer: str
    day: date
    sent_sum: int
    doubts: list[tuple[str, int]]  # (identifier, value)
    unsettled: bool  # other rows of the day are in flight or changed recently


_DAYS_SQL = """
SELECT meter, stripe_customer_id AS customer, day,
       coalesce(sum(value) FILTER (WHERE status = :sent), 0) AS sent_sum,
       array_agg(identifier ORDER BY revision) FILTER (WHERE status = :in_doubt) AS identifiers,
       array_agg(value ORDER BY revision) FILTER (WHERE status = :in_doubt) AS values,
       bool_or(status = ANY(:unsent) AND first_attempted_at IS NOT NULL
               OR status = :cancelling)
           OR max(updated_at) FILTER (WHERE status <> :in_doubt) > :quiet_since AS unsettled
FROM billing.meter_ledger
WHERE meter = ANY(:meters)
GROUP BY meter, stripe_customer_id, day
HAVING bool_or(status = :in_doubt)
"""


def settle_in_doubt(
    engine: Engine,
    billing: StripeBilling,
    meter_ids: dict[str, str],
    now: datetime | None = None,
) -> dict[LedgerStatus, int]:
    """Settle in-doubt rows of the meters in `meter_ids` (name → Stripe meter id).

    Returns how many rows became sent, absent, or stayed in doubt.
    """
    now = now or datetime.now(UTC)
    with engine.connect() as connection:
        rows = connection.execute(
            text(_DAYS_SQL),
            {
                "sent": LedgerStatus.SENT,
                "in_doubt": LedgerStatus.IN_DOUBT,
                "cancelling": LedgerStatus.CANCELLING,
                "unsent": list(UNSENT_STATUSES),
                "meters": list(meter_ids),
                "quiet_since": now - SUMMARY_SETTLE,
            },
        ).all()
    by_pair: dict[tuple[str, str], list[_DayRows]] = defaultdict(list)
    for row in rows:
        by_pair[(row.meter, row.customer)].append(
            _DayRows(
                row.meter,
                row.customer,
                row.day,
                int(row.sent_sum),
                list(zip(row.identifiers, map(int, row.values), strict=True)),
                bool(row.unsettled),
            )
        )
    outcome = dict.fromkeys((LedgerStatus.SENT, LedgerStatus.ABSENT, LedgerStatus.IN_DOUBT), 0)
    for (meter, customer), days in by_pair.items():
        first = min(d.day for d in days)
        end = max(d.day for d in days) + timedelta(days=1)
        stripe_days = billing.daily_totals(
            meter_ids[meter], customer, day_start(first), day_start(end)
        )
        for day_rows in days:
            arrived = _arrived(day_rows, stripe_days.get(day_rows.day, 0.0))
            if arrived is None:
                outcome[LedgerStatus.IN_DOUBT] += len(day_rows.doubts)
                continue
            _settle(engine, day_rows, arrived, stripe_days.get(day_rows.day, 0.0))
            outcome[LedgerStatus.SENT] += len(arrived)
            outcome[LedgerStatus.ABSENT] += len(day_rows.doubts) - len(arrived)
    return outcome


def _arrived(day_rows: _DayRows, stripe_total: float) -> set[str] | None:
    """The one set of in-doubt rows that explains Stripe's total, or None when ambiguous."""
    if day_rows.unsettled or len(day_rows.doubts) > MAX_CANDIDATES:
        return None
    missing = stripe_total - day_rows.sent_sum
    matches = [
        {identifier for identifier, _ in subset}
        for size in range(len(day_rows.doubts) + 1)
        for subset in itertools.combinations(day_rows.doubts, size)
        if abs(sum(value for _, value in subset) - missing) <= TOLERANCE
    ]
    return matches[0] if len(matches) == 1 else None


def _settle(engine: Engine, day_rows: _DayRows, arrived: set[str], stripe_total: float) -> None:
    note = f"settled against Stripe's daily total {stripe_total:g}"
    with engine.begin() as connection:
        for identifier, _ in day_rows.doubts:
            status = LedgerStatus.SENT if identifier in arrived else LedgerStatus.ABSENT
            connection.execute(
                text(
                    """
                    UPDATE billing.meter_ledger
                    SET status = :status, status_reason = :reason, updated_at = now(),
                        sent_at = CASE WHEN :arrived THEN now() ELSE sent_at END
                    WHERE identifier = :identifier AND status = :in_doubt
                    """
                ),
                {
                    "status": status,
                    "reason": f"{note}: {'arrived' if identifier in arrived else 'never arrived'}",
                    "arrived": identifier in arrived,
                    "identifier": identifier,
                    "in_doubt": LedgerStatus.IN_DOUBT,
                },
            )
