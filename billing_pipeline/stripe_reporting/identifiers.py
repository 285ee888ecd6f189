"""Deterministic meter-event identifiers and timestamps.

An identifier is derived from meter, customer, day, revision and the value the event carries, so
any rerun on any machine sends the same identifier for the same event, and Stripe's "duplicate"
answer means Stripe holds this very value: after a ledger restored from a backup, a re-planned
revision with another value is another identifier, never mistaken for delivered.

Timestamps sit inside the event's own UTC day (Stripe aggregates by timestamp) and grow with
the wall-clock time of planning, so a later revision is newer under both readings of "newer"
(later timestamp, later arrival), even when a restored ledger reuses a revision number.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, time, timedelta

MAX_IDENTIFIER_LENGTH = 100
DIGEST_LENGTH = 10
# Planning times from the day's end over this span map onto the day's seconds, in order.
TIMESTAMP_SPAN = timedelta(days=40)
_DAY_SECONDS = 86_400


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:DIGEST_LENGTH]


def event_identifier(
    meter: str, event_name: str, customer: str, day: date, revision: int, value: int
) -> str:
    digest = _digest(event_name, customer, day.isoformat(), revision, value)
    identifier = f"bp-{meter}-{customer}-{day:%Y%m%d}-r{revision}-{digest}"
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        # Customer ids are usually short; a long one is replaced by its digest.
        identifier = f"bp-{meter}-c{_digest(customer)}-{day:%Y%m%d}-r{revision}-{digest}"
    return identifier


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0, tzinfo=UTC))


def event_timestamp(day: date, planned_at: datetime, after: datetime | None = None) -> datetime:
    """A second of `day` that grows with `planned_at`, strictly after `after` if given.

    Planning at the day's end maps to 00:00:01 and planning TIMESTAMP_SPAN later to 23:59:58,
    so two revisions planned more than a minute apart are ordered by wall-clock time alone.
    """
    elapsed = (planned_at - day_start(day + timedelta(days=1))) / TIMESTAMP_SPAN
    second = 1 + int(max(0.0, min(1.0, elapsed)) * (_DAY_SECONDS - 3))
    stamp = day_start(day) + timedelta(seconds=second)
    if after is not None and stamp <= after:
        stamp = after + timedelta(seconds=1)
    return min(stamp, day_start(day) + timedelta(seconds=_DAY_SECONDS - 1))
