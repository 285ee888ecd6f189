"""Deterministic meter-event identifiers and timestamps.

The identifier is derived from meter, organization, day and revision alone, so any rerun, on any
machine, sends the same identifier for the same event and Stripe can reject the duplicate.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

# Events are stamped late in their own day (after any usage the day's aggregate counts) and a
# second later per revision, so "latest timestamp wins" picks the newest revision of a day.
EVENT_TIME_OF_DAY = time(23, 0, tzinfo=UTC)
MAX_IDENTIFIER_LENGTH = 100


def event_identifier(meter: str, organization_id: int, day: date, revision: int) -> str:
    identifier = f"bp-{meter}-{organization_id}-{day:%Y%m%d}-r{revision}"
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise ValueError(f"identifier longer than Stripe allows: {identifier}")
    return identifier


def event_timestamp(day: date, revision: int) -> datetime:
    return datetime.combine(day, EVENT_TIME_OF_DAY) + timedelta(seconds=revision)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0, tzinfo=UTC))
