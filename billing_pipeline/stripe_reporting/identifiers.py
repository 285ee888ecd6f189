"""Deterministic meter-event identifiers and timestamps.

An identifier is derived from meter, customer, day (and the part of the day, when a billing
boundary cuts it), revision and the value the event carries, so
any rerun on any machine sends the same identifier for the same event, and Stripe's "duplicate"
answer means Stripe holds this very value: after a ledger restored from a backup, a re-planned
revision with another value is another identifier, never mistaken for delivered.

Timestamps sit inside the event's own part of its UTC day (Stripe aggregates by timestamp, so
this is what puts usage in the right billing period) and grow with the wall-clock time of
planning, and past the newest row of the same slot, so a later revision is newer under both
readings of "newer" (later timestamp, later arrival), even when a restored ledger reuses a
revision number. On an hourly pre-aggregated meter the range is the part's own hour window
(`attribution.py` gives each part one), so each revision replaces the window's older events.

Planning computes both in the database (`identifier_sql`, `timestamp_sql`),
so revisions are written by one statement without passing through Python; the Python functions
are the same rules for the rows Python builds (re-asserts), and a test holds the two equal.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, time, timedelta

MAX_IDENTIFIER_LENGTH = 100
DIGEST_LENGTH = 10
# Planning times from the day's end over this span map onto the day's seconds, in order.
TIMESTAMP_SPAN = timedelta(days=40)
_MICROSECOND = timedelta(microseconds=1)


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:DIGEST_LENGTH]


def event_identifier(
    meter: str,
    event_name: str,
    customer: str,
    part_start: datetime,
    revision: int,
    value: int,
) -> str:
    """`bp-<meter>-<customer>-<yyyymmdd>[t<hhmmss>]-r<revision>-<digest>`.

    A whole day (its part starts at midnight) keeps the form it had before days were cut.
    """
    part_start = part_start.astimezone(UTC)
    day = part_start.date()
    part = f"{day:%Y%m%d}" + ("" if part_start == day_start(day) else f"t{part_start:%H%M%S}")
    digest_parts: list[object] = [event_name, customer, day.isoformat(), revision, value]
    if part != f"{day:%Y%m%d}":
        digest_parts.append(part_start.isoformat())
    digest = _digest(*digest_parts)
    identifier = f"bp-{meter}-{customer}-{part}-r{revision}-{digest}"
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        # Customer ids are usually short; a long one is replaced by its digest.
        identifier = f"bp-{meter}-c{_digest(customer)}-{part}-r{revision}-{digest}"
    return identifier


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0, tzinfo=UTC))


def event_timestamp(
    start: datetime, end: datetime, planned_at: datetime, after: datetime | None = None
) -> datetime:
    """A second of [start, end) that grows with `planned_at`, strictly after `after` if given.

    Planning at `end` maps to the range's second second and planning TIMESTAMP_SPAN later to
    its last but one, so on a whole day two revisions planned more than a minute apart are
    ordered by wall-clock time alone.
    """
    seconds = (end - start) // timedelta(seconds=1)
    # Integer microseconds, so that `timestamp_sql` computes the very same second.
    elapsed = min(max(planned_at - end, timedelta(0)), TIMESTAMP_SPAN) // _MICROSECOND
    second = min(1, seconds - 1) + elapsed * max(0, seconds - 3) // (TIMESTAMP_SPAN // _MICROSECOND)
    stamp = start + timedelta(seconds=second)
    if after is not None and stamp <= after:
        stamp = after + timedelta(seconds=1)
    return min(stamp, end - timedelta(seconds=1))


def _digest_sql(text_sql: str) -> str:
    return f"left(encode(sha256(convert_to({text_sql}, 'UTF8')), 'hex'), {DIGEST_LENGTH})"


def identifier_sql(customer: str, part_start: str, revision: str, value: str) -> str:
    """`event_identifier` as a SQL expression over column expressions; the meter and event name
    are the parameters `:meter` and `:event_name`."""
    utc = f"({part_start} AT TIME ZONE 'UTC')"
    whole_day = f"(CAST({utc} AS time) = time '00:00')"
    part = (
        f"to_char({utc}, 'YYYYMMDD') || CASE WHEN {whole_day} THEN '' "
        f"ELSE 't' || to_char({utc}, 'HH24MISS') END"
    )
    # datetime.isoformat() of a UTC instant: microseconds only when there are any.
    iso = (
        f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
        f"CAST(extract(microseconds FROM {utc}) AS bigint) % 1000000 <> 0 "
        f"THEN to_char({utc}, '.US') ELSE '' END || '+00:00'"
    )
    digest = _digest_sql(
        f"CAST(:event_name AS text) || '|' || {customer} || '|' || to_char({utc}, 'YYYY-MM-DD') "
        f"|| '|' || CAST({revision} AS text) || '|' || CAST({value} AS text) "
        f"|| CASE WHEN {whole_day} THEN '' ELSE '|' || {iso} END"
    )
    tail = f"'-' || {part} || '-r' || CAST({revision} AS text) || '-' || {digest}"
    full = f"'bp-' || CAST(:meter AS text) || '-' || {customer} || {tail}"
    short = f"'bp-' || CAST(:meter AS text) || '-c' || {_digest_sql(customer)} || {tail}"
    return f"CASE WHEN length({full}) <= {MAX_IDENTIFIER_LENGTH} THEN {full} ELSE {short} END"


def timestamp_sql(start: str, end: str, planned_at: str, after: str) -> str:
    """`event_timestamp` as a SQL expression, in the same integer arithmetic."""
    span = TIMESTAMP_SPAN // _MICROSECOND
    seconds = f"CAST(floor(extract(epoch FROM {end} - {start})) AS bigint)"
    elapsed = (
        f"least(greatest(CAST(extract(epoch FROM {planned_at} - {end}) * 1000000 AS bigint), 0),"
        f" {span})"
    )
    second = f"least(1, {seconds} - 1) + {elapsed} * greatest(0, {seconds} - 3) / {span}"
    stamp = f"({start} + ({second}) * interval '1 second')"
    return (
        f"least(CASE WHEN {after} IS NOT NULL AND {stamp} <= {after} "
        f"THEN {after} + interval '1 second' ELSE {stamp} END, {end} - interval '1 second')"
    )
