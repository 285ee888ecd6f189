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

from sqlalchemy import Engine, text

from billing_pipeline.usage.meters import Meter

PREVIEW_ROWS = 10
# This meter's stored rows for the window: what a refresh replaces and then reports on.
_WINDOW_ROWS = (
    "FROM billing.daily_usage WHERE meter = :meter "
    "AND day >= CAST(:start AS timestamptz)::date AND day < CAST(:end AS timestamptz)::date"
)


@dataclass(frozen=True)
class UsageSummary:
    rows: int
    organizations: int
    total: int
    top: list[tuple[date, int, int]]


def refresh_daily_usage(
    engine: Engine, meter: Meter, start: datetime, end: datetime
) -> UsageSummary:
    """Recompute `meter` for every UTC day in [start, end) and return what was stored."""
    window = {"meter": meter.name, "start": start, "end": end}
    with engine.begin() as connection:
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
        totals = connection.execute(
            text(
                "SELECT count(*), count(DISTINCT organization_id), coalesce(sum(value), 0) "
                f"{_WINDOW_ROWS}"
            ),
            window,
        ).one()
        top = connection.execute(
            text(
                f"SELECT day, organization_id, value {_WINDOW_ROWS} "
                "ORDER BY value DESC, day, organization_id LIMIT :limit"
            ),
            {**window, "limit": PREVIEW_ROWS},
        ).all()
    return UsageSummary(
        rows=int(totals[0]),
        organizations=int(totals[1]),
        total=int(totals[2]),
        top=[(row.day, int(row.organization_id), int(row.value)) for row in top],
    )
