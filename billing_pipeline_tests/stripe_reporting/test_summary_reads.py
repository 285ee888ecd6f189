"""Reconciliation's summary reads keep to their pace and allowance, and back off on 429.

Against the emulator with a Stripe-like rate limit (a token bucket of one second's requests) and
its 429 fault, through the project's Stripe seam with its own 429 retries turned off, so every
429 reaches the pacing; the emulator's per-route counter says how many reads Stripe received.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import stripe

from billing_pipeline.stripe_client import RetryRule, StripeBilling
from billing_pipeline.stripe_reporting.summary_reads import (
    RATE_LIMIT_RETRIES,
    BudgetExhaustedError,
    PacedReads,
    retry_after_seconds,
)
from billing_pipeline_tests.support.stripe import TEST_KEY, new_customer
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

SUMMARIES = "list_event_summaries"
END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = END - timedelta(days=35)


@pytest.fixture
def no_retries(emulator_server: StripeEmulator, emulator_control: EmulatorControl) -> StripeBilling:
    return StripeBilling(TEST_KEY, emulator_server.url, retry=RetryRule(attempts=1))


def test_paced_reads_stay_under_the_rate_limit_a_burst_exceeds(
    no_retries: StripeBilling, emulator_control: EmulatorControl
) -> None:
    customer = new_customer(no_retries, "Alpha")
    [meter] = [m for m in no_retries.list_meters() if m.event_name == "temperature_readings"]
    emulator_control.set_rate_limit(5)
    reads = PacedReads(reads_per_second=4, allowed=12)

    started = time.monotonic()
    for _ in range(12):
        reads.read(lambda: no_retries.daily_totals(meter.id, customer, START, END))

    assert time.monotonic() - started >= 11 / 4
    assert emulator_control.request_count().get("429", 0) == 0
    assert emulator_control.endpoint_counts()[SUMMARIES] == 12
    # The same twelve reads unpaced: Stripe refuses the ones past its bucket.
    refused = 0
    for _ in range(12):
        try:
            no_retries.daily_totals(meter.id, customer, START, END)
        except stripe.RateLimitError:
            refused += 1
    assert refused > 0


def test_a_429_waits_longer_each_time_then_gives_up_and_every_try_counts(
    no_retries: StripeBilling, emulator_control: EmulatorControl
) -> None:
    customer = new_customer(no_retries, "Alpha")
    [meter] = [m for m in no_retries.list_meters() if m.event_name == "temperature_readings"]
    emulator_control.set_faults(error_429_rate=1.0)
    slept: list[float] = []
    reads = PacedReads(reads_per_second=10, allowed=100, sleep=slept.append, clock=lambda: 0.0)

    with pytest.raises(stripe.RateLimitError):
        reads.read(lambda: no_retries.daily_totals(meter.id, customer, START, END))

    assert reads.calls == reads.rate_limited == RATE_LIMIT_RETRIES + 1
    assert emulator_control.endpoint_counts()[SUMMARIES] == RATE_LIMIT_RETRIES + 1
    # No Retry-After from Stripe here: exponential pauses, 1 s, 2 s, 4 s, 8 s.
    assert slept == [1.0, 2.0, 4.0, 8.0]


def test_the_allowance_is_never_exceeded(
    no_retries: StripeBilling, emulator_control: EmulatorControl
) -> None:
    customer = new_customer(no_retries, "Alpha")
    [meter] = [m for m in no_retries.list_meters() if m.event_name == "temperature_readings"]
    reads = PacedReads(reads_per_second=50, allowed=3)

    for _ in range(3):
        totals = reads.read(lambda: no_retries.daily_totals(meter.id, customer, START, END))
        assert sum(totals.values()) == 0
    with pytest.raises(BudgetExhaustedError):
        reads.read(lambda: no_retries.daily_totals(meter.id, customer, START, END))

    assert emulator_control.endpoint_counts()[SUMMARIES] == 3


def test_retry_after_is_read_in_seconds_and_bounded() -> None:
    def limited(headers: dict[str, str]) -> stripe.RateLimitError:
        return stripe.RateLimitError("Too many requests", headers=headers)

    assert retry_after_seconds(limited({"Retry-After": "3"})) == 3.0
    assert retry_after_seconds(limited({"Retry-After": "3600"})) == 60.0
    assert retry_after_seconds(limited({"Retry-After": "soon"})) is None
    assert retry_after_seconds(limited({})) is None
