"""Daily usage per meter: aggregated in Postgres, stored in `billing.daily_usage`.

Each materialization replaces exactly its window's rows in one transaction (delete, then insert
from the meter's SQL), so re-running or backfilling a partition is idempotent and readers never
see a half-written day. No reading passes through Python: memory does not grow with the data.

Refreshes of one meter are serialized by a transaction-scoped advisory lock: two at once (the
schedule and the late-data sensor) would otherwise both delete, then both insert the same keys
and one would fail on `pk_daily_usage`. The second waits and then replaces the first's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection, Engine, text

from billing_pipeline.db.transactions import in_transaction
from billing_pipeline.usage.meters import Meter

PREVIEW_ROWS = 10
# This meter's stored rows for the window: what a refresh replaces and then reports on.
_WINDOW_ROWS = (
    "FROM billing.daily_usage WHERE meter = :meter "
    "AND day >= CAST(:start AS timestamptz)::date AND day < CAST(:end AS timestamptz)::date"
)
# Every UTC day of the window with its own figures, zeros for a day without usage: a range run
# reports each day's partition separately, so each must get its own numbers, not the window's.
_PER_DAY = """
SELECT days.day::date AS day, count(u.organization_id) AS rows,
       count(DISTINCT u.organization_id) AS organizations, coalesce(sum(u.value), 0) AS total
FROM generate_series(CAST(:start AS timestamptz)::date::timestamp,
                     (CAST(:end AS timestamptz)::date - 1)::timestamp,
                     interval '1 day') AS days (day)
LEFT JOIN billing.daily_usage u ON u.meter = :meter AND u.day = days.day::date
GROUP BY 1 ORDER BY 1
"""
# The largest values of each day, for the preview an operator reads.
_TOP_PER_DAY = f"""
SELECT day, organization_id, value FROM (
    SELECT day, organization_id, value,
           row_number() OVER (PARTITION BY day ORDER BY value DESC, organization_id) AS place
    {_WINDOW_ROWS}
) AS ranked
WHERE place <= :limit ORDER BY day, place
"""


@dataclass(frozen=True)
class DayUsage:
    """One UTC day of one meter as stored: what that day's partition reports."""

    rows: int
    organizations: int
    total: int
    top: list[tuple[int, int]]  # (organization, value), largest first


def refresh_daily_usage(
    engine: Engine | Connection, meter: Meter, start: datetime, end: datetime
) -> dict[date, DayUsage]:
    """Recompute `meter` for every UTC day in [start, end); return each day's stored figures.

    Given a connection it writes in the caller's transaction: the dry run recomputes what a run
    would, then rolls it back."""
    window = {"meter": meter.name, "start": start, "end": end}
    with in_transaction(engine) as connection:
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('billing.daily_usage'), hashtext(:meter))"),
            window,
        )
        connection.execute(
            text(f"DELETE {_WINDOW_ROWS}"),
            window,
        )
        connection.execute(
            text(
                "INSERT INTO billing.daily_usage (meter, day, organization_id, value) "
                f"SELECT :meter, day, organization_id, value FROM ({meter.sql}) AS usage"
            ),
            window,
        )
        per_day = connection.execute(text(_PER_DAY), window).all()
        top = connection.execute(text(_TOP_PER_DAY), {**window, "limit": PREVIEW_ROWS}).all()
    tops: dict[date, list[tuple[int, int]]] = {}
    for row in top:
        tops.setdefault(row.day, []).append((int(row.organization_id), int(row.value)))
    return {
        row.day: DayUsage(
            rows=int(row.rows),
            organizations=int(row.organizations),
            total=int(row.total),
            top=tops.get(row.day, []),
        )
        for row in per_day
    }
