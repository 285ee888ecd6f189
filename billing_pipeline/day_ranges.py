"""How a range of UTC days is written, everywhere a person reads one.

Code keeps ranges half-open, [first_day, end_day), as Dagster's time windows do; people read
them inclusive. Logs, metadata, the dry run and the status all write them through `day_range`,
so "2026-12-05 to 2026-12-06 (2 days)" means the same two days wherever it appears.
"""

from __future__ import annotations

from datetime import date, timedelta


def last_complete_days(count: int, today: date) -> tuple[date, date]:
    """[first_day, end_day) of the `count` UTC days before `today`: today is still going on and
    holds no complete data yet, so "the last 7 days" are the 7 that have ended."""
    return today - timedelta(days=count), today


def day_range(first_day: date, end_day: date) -> str:
    """The days [first_day, end_day), inclusive and counted: "2026-12-05 to 2026-12-06
    (2 days)", "2026-12-05 (1 day)", or "no days" for an empty range."""
    count = (end_day - first_day).days
    if count <= 0:
        return "no days"
    if count == 1:
        return f"{first_day} (1 day)"
    return f"{first_day} to {end_day - timedelta(days=1)} ({count} days)"
