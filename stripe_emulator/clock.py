"""The emulator's clock: real time plus an offset that tests can move.

Stripe's rules are windows in time (24 h identifier dedupe, 35-day timestamps, 15-minute
sessions). An offset clock lets a test cross them in milliseconds while the clock keeps ticking,
so code that measures elapsed time still sees time pass.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """Not thread-safe on its own: the state lock guards it."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> int:
        return int(time.time() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def set(self, unix_ts: float) -> None:
        self.offset = unix_ts - time.time()


def iso8601(unix_ts: int) -> str:
    """Stripe's v2 timestamp format, e.g. 2024-06-01T12:00:00.000Z."""
    return datetime.fromtimestamp(unix_ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse_iso8601(text: str) -> int:
    """Parse a v2 timestamp; a value without an offset is read as UTC, never local time."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())
