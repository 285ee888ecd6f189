"""Reconciliation's Stripe reads, paced under Stripe's read rate limit and counted for its budget.

Stripe allows about 100 read requests/s in live mode and 25 in test mode, for the whole account:
reconciliation is one reader among many (the dashboard, the webhook flow, other integrations), so
it spaces its own summary reads to a configured rate instead of bursting until Stripe answers
429. `StripeBilling` already retries a 429 a few times with jittered backoff (stripe_client.py);
a 429 that still comes through means the account is busy, so the next read waits for Stripe's
`Retry-After` when it gives one (else an exponential pause) before the read is tried again, a
bounded number of times. Every read tried counts against the run's allowance, so the budget an
operator sets is the number of requests this module started (the client's own retries of one
read are not seen here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import stripe

T = TypeVar("T")
RATE_LIMIT_RETRIES = 4
MAX_PAUSE_SECONDS = 60.0


class BudgetExhaustedError(Exception):
    """The run's allowance of reads is spent: the remaining pairs wait for a later run."""


def retry_after_seconds(error: stripe.RateLimitError) -> float | None:
    """Stripe's `Retry-After` header in seconds, when the 429 carried a usable one."""
    value = (error.headers or {}).get("Retry-After") or (error.headers or {}).get("retry-after")
    try:
        return min(MAX_PAUSE_SECONDS, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


@dataclass
class PacedReads:
    """At most `allowed` reads, at most `reads_per_second` of them a second."""

    reads_per_second: float
    allowed: int
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    calls: int = 0
    rate_limited: int = 0
    _next_at: float = field(default=0.0, repr=False)

    def read(self, call: Callable[[], T]) -> T:
        """Run `call` in its turn; on a 429 wait and try again (each try is one more read)."""
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            if self.calls >= self.allowed:
                raise BudgetExhaustedError
            self._wait_turn()
            self.calls += 1
            try:
                return call()
            except stripe.RateLimitError as error:
                self.rate_limited += 1
                if attempt == RATE_LIMIT_RETRIES:
                    raise
                pause = retry_after_seconds(error)
                if pause is None:
                    pause = min(MAX_PAUSE_SECONDS, 2.0**attempt)
                self._next_at = max(self._next_at, self.clock() + pause)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait_turn(self) -> None:
        now = self.clock()
        if now < self._next_at:
            self.sleep(self._next_at - now)
            now = self._next_at
        self._next_at = now + 1.0 / self.reads_per_second
