"""The Stripe seam: outcomes for Stripe's answers, and bounded backoff on transient errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from billing_pipeline.stripe_client import (
    CANCEL_PARAM,
    CancelOutcome,
    Outcome,
    RetryRule,
    StreamEvent,
    StripeBilling,
    classify_cancel_rejection,
    classify_rejection,
)
from billing_pipeline_tests.support.stripe import TEST_KEY, new_customer
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator


def send(
    stripe_billing: StripeBilling, customer: str, identifier: str, days_ago: int = 1
) -> Outcome:
    return stripe_billing.send_meter_event(
        event_name="temperature_readings",
        customer=customer,
        value=5,
        identifier=identifier,
        timestamp=datetime.now(UTC) - timedelta(days=days_ago),
    ).outcome


@pytest.fixture
def known_customer(stripe_billing: StripeBilling) -> str:
    """A customer Stripe knows (the global `customer` is for the emulator's own tests)."""
    return new_customer(stripe_billing, "C")


def test_a_duplicate_identifier_means_already_delivered(
    stripe_billing: StripeBilling, emulator_control: EmulatorControl, known_customer: str
) -> None:
    assert send(stripe_billing, known_customer, "bp-x-1") is Outcome.SENT
    assert send(stripe_billing, known_customer, "bp-x-1") is Outcome.ALREADY_SENT
    assert len(emulator_control.meter_events()) == 1


def test_an_old_timestamp_is_expired_not_retried(
    stripe_billing: StripeBilling, emulator_control: EmulatorControl, known_customer: str
) -> None:
    assert send(stripe_billing, known_customer, "bp-old", days_ago=36) is Outcome.EXPIRED
    assert emulator_control.request_count().get("400") == 1


def test_other_rejections_carry_stripes_message(
    stripe_billing: StripeBilling, emulator_control: EmulatorControl
) -> None:
    emulator_control.set_unknown_customer_mode("reject")
    result = stripe_billing.send_meter_event(
        event_name="temperature_readings",
        customer="cus_nobody",
        value=1,
        identifier="bp-nobody",
        timestamp=datetime.now(UTC),
    )
    assert result.outcome is Outcome.REJECTED
    assert result.message and "cus_nobody" in result.message


def test_a_future_timestamp_is_rejected_naming_the_param_not_expired(
    stripe_billing: StripeBilling, known_customer: str
) -> None:
    """Both timestamp refusals name `param=timestamp`; only one older than 35 days is expired."""
    result = stripe_billing.send_meter_event(
        event_name="temperature_readings",
        customer=known_customer,
        value=1,
        identifier="bp-future",
        timestamp=datetime.now(UTC) + timedelta(hours=1),
    )
    assert (result.outcome, result.code) == (Outcome.REJECTED, "invalid_param:timestamp")


def test_an_identifier_refused_without_stripe_should_retry_false_is_not_a_duplicate(
    stripe_billing: StripeBilling, emulator_control: EmulatorControl, known_customer: str
) -> None:
    """A too-long identifier is refused on `param=identifier` too, but without the duplicate's
    `Stripe-Should-Retry: false`: it is a rejection to fix, never "already delivered"."""
    result = stripe_billing.send_meter_event(
        event_name="temperature_readings",
        customer=known_customer,
        value=1,
        identifier="x" * 101,
        timestamp=datetime.now(UTC),
    )
    assert (result.outcome, result.code) == (Outcome.REJECTED, "invalid_param:identifier")
    assert emulator_control.meter_events() == []


def stripe_400(message: str, param: str | None = None, code: str | None = None) -> Any:
    """A 400 as the SDK raises it, for answers the emulator (held to Stripe's contract) never
    gives: a refusal without `param`, or with a code Stripe documents only for error reports."""
    body = {"error": {"type": "invalid_request_error", "message": message}}
    return stripe.InvalidRequestError(
        message, param, code, http_status=400, json_body=body, headers={}
    )


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (stripe_400("An event already exists with identifier bp-1."), Outcome.ALREADY_SENT),
        (stripe_400("The event timestamp cannot be more than 35 days in past."), Outcome.EXPIRED),
        (stripe_400("Too old", "timestamp", "timestamp_too_far_in_past"), Outcome.EXPIRED),
        (stripe_400("An event already exists with identifier bp-1.", "payload"), Outcome.REJECTED),
        (stripe_400("Something else entirely."), Outcome.REJECTED),
    ],
    ids=["message-duplicate", "message-too-old", "code-too-old", "param-wins", "unknown"],
)
def test_message_text_is_only_the_fallback_when_stripe_names_no_param(
    error: stripe.InvalidRequestError, outcome: Outcome
) -> None:
    assert classify_rejection(error, datetime.now(UTC)).outcome is outcome


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (stripe_400("… has already been cancelled.", CANCEL_PARAM), CancelOutcome.CANCELLED),
        (stripe_400("… only within 24 hours …", CANCEL_PARAM), CancelOutcome.TOO_LATE),
        (
            stripe_400("No meter event found with identifier x", CANCEL_PARAM),
            CancelOutcome.REJECTED,
        ),
        (stripe_400("within 24 hours", "event_name"), CancelOutcome.REJECTED),
    ],
    ids=["already-cancelled", "too-late", "unknown-identifier", "other-param"],
)
def test_cancel_refusals_are_read_only_on_the_identifier_param(
    error: stripe.InvalidRequestError, outcome: CancelOutcome
) -> None:
    assert classify_cancel_rejection(error).outcome is outcome


def test_cancelling_an_identifier_stripe_does_not_hold_is_a_rejection_naming_the_param(
    stripe_billing: StripeBilling,
) -> None:
    result = stripe_billing.cancel_meter_event(
        event_name="temperature_readings", identifier="bp-never-sent"
    )
    assert (result.outcome, result.code) == (
        CancelOutcome.REJECTED,
        "invalid_param:cancel[identifier]",
    )


def test_429_and_500_are_retried_with_backoff_until_sent(
    emulator_server: StripeEmulator, emulator_control: EmulatorControl, known_customer: str
) -> None:
    delays: list[float] = []
    client = StripeBilling(
        TEST_KEY,
        emulator_server.url,
        retry=RetryRule(attempts=50, base_seconds=0.001, cap_seconds=0.004),
        sleep=delays.append,
    )
    emulator_control.set_faults(error_429_rate=0.4, error_500_rate=0.4, seed=3)

    outcomes = [send(client, known_customer, f"bp-retry-{i}") for i in range(10)]

    assert outcomes == [Outcome.SENT] * 10
    assert len(emulator_control.meter_events()) == 10
    assert delays, "faults were injected, so some calls must have backed off"
    assert all(0 <= d <= 0.004 for d in delays)


def test_transient_errors_give_up_after_the_bounded_attempts(
    emulator_server: StripeEmulator, emulator_control: EmulatorControl, known_customer: str
) -> None:
    delays: list[float] = []
    client = StripeBilling(
        TEST_KEY,
        emulator_server.url,
        retry=RetryRule(attempts=3),
        sleep=delays.append,
    )
    emulator_control.set_faults(error_500_rate=1.0)

    with pytest.raises(stripe.APIError):
        send(client, known_customer, "bp-never")
    assert len(delays) == 2
    assert emulator_control.meter_events() == []


def fail_in_an_outage(
    emulator: StripeEmulator, control: EmulatorControl, rule: RetryRule, customer: str
) -> float:
    """Send one event while Stripe answers every request with a 500; the seconds it took."""
    client = StripeBilling(TEST_KEY, emulator.url, retry=rule)
    control.set_faults(error_500_rate=1.0)
    started = time.monotonic()
    with pytest.raises(stripe.APIError):
        send(client, customer, "bp-outage")
    return time.monotonic() - started


def test_one_logical_call_in_a_5xx_outage_is_at_most_the_bounded_requests(
    emulator_server: StripeEmulator, emulator_control: EmulatorControl, known_customer: str
) -> None:
    """One policy, not SDK retries x ours: the emulator sees exactly `attempts` requests, and
    the call gives up within the deadline (plus one request), the row left for the next run."""
    rule = RetryRule(attempts=4, base_seconds=0.05, cap_seconds=0.2, deadline_seconds=5.0)
    elapsed = fail_in_an_outage(emulator_server, emulator_control, rule, known_customer)

    assert emulator_control.request_count()["500"] == rule.attempts
    assert elapsed < rule.deadline_seconds
    emulator_control.set_faults()
    assert emulator_control.meter_events() == []


def test_the_deadline_stops_retrying_before_the_attempts_run_out(
    emulator_server: StripeEmulator, emulator_control: EmulatorControl, known_customer: str
) -> None:
    """No retry starts once its wait would pass the deadline: with attempts to spare, an
    outage still ends the call within the deadline plus one request."""
    rule = RetryRule(attempts=50, base_seconds=0.5, cap_seconds=0.5, deadline_seconds=1.5)
    elapsed = fail_in_an_outage(emulator_server, emulator_control, rule, known_customer)

    assert elapsed <= rule.deadline_seconds + 1.0
    assert 2 <= emulator_control.request_count()["500"] < rule.attempts


@pytest.mark.parametrize(("header", "requests"), [(False, 1), (True, 3)])
def test_stripe_should_retry_decides_whether_a_5xx_is_retried(
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    known_customer: str,
    header: bool,
    requests: int,
) -> None:
    """`Stripe-Should-Retry: false` stops at the first answer; `true` retries to the bound."""
    client = StripeBilling(
        TEST_KEY, emulator_server.url, retry=RetryRule(attempts=3), sleep=lambda _: None
    )
    emulator_control.set_faults(error_500_rate=1.0, should_retry=header)

    with pytest.raises(stripe.APIError):
        send(client, known_customer, f"bp-should-retry-{header}")

    assert emulator_control.request_count()["500"] == requests


def test_retry_delays_grow_exponentially_up_to_the_cap() -> None:
    rule = RetryRule(attempts=10, base_seconds=0.5, cap_seconds=4.0)
    ceilings = [min(rule.cap_seconds, rule.base_seconds * 2**n) for n in range(6)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for attempt, ceiling in enumerate(ceilings):
        assert all(0 <= rule.delay(attempt) <= ceiling for _ in range(50))


def stream_events(customer: str, prefix: str, count: int) -> list[StreamEvent]:
    now = datetime.now(UTC) - timedelta(hours=1)
    return [
        StreamEvent("temperature_readings", customer, 2, f"{prefix}-{i}", now) for i in range(count)
    ]


def test_the_v2_stream_sends_100_events_a_request_and_renews_an_expired_session(
    stripe_billing: StripeBilling, emulator_control: EmulatorControl, known_customer: str
) -> None:
    first = stripe_billing.stream_meter_events(stream_events(known_customer, "bp-s1", 100))
    # The session is 15 minutes old: Stripe answers `billing_meter_event_session_expired`, and
    # the client opens a new session and resends the same request.
    emulator_control.advance_clock(15 * 60)
    second = stripe_billing.stream_meter_events(stream_events(known_customer, "bp-s2", 100))

    assert (first.outcome, second.outcome) == (Outcome.SENT, Outcome.SENT)
    events = emulator_control.meter_events()
    assert len(events) == 200
    assert {e["source"] for e in events} == {"v2"}
    with pytest.raises(ValueError, match=r"1\.\.100"):
        stripe_billing.stream_meter_events(stream_events(known_customer, "bp-s3", 101))


def test_a_streamed_event_stripe_refuses_is_accepted_then_reported(
    stripe_billing: StripeBilling, emulator_control: EmulatorControl, known_customer: str
) -> None:
    events = [*stream_events(known_customer, "bp-ok", 1), *stream_events("cus_nobody", "bp-no", 1)]

    # 200 for the request: the refusal comes later, as a meter error report naming the event.
    assert stripe_billing.stream_meter_events(events).outcome is Outcome.SENT
    assert [e["identifier"] for e in emulator_control.meter_events()] == ["bp-ok-0"]
    reports = emulator_control.error_reports()
    assert [(r["identifier"], r["code"]) for r in reports] == [
        ("bp-no-0", "meter_event_customer_not_found")
    ]
