"""Injected faults, rate limits and Stripe's one-call-per-customer-per-meter rule."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
import stripe

from billing_pipeline_tests.support.stripe import NOON, make_client
from stripe_emulator import EmulatorControl, StripeEmulator

# Every test here starts from an empty emulator whose clock reads NOON.
pytestmark = pytest.mark.usefixtures("emulator_at_noon", "readings_meter")


def send(stripe_client: stripe.StripeClient, customer: str, identifier: str, **options: Any) -> Any:
    return stripe_client.v1.billing.meter_events.create(
        {
            "event_name": "readings",
            "payload": {"stripe_customer_id": customer, "value": "1"},
            "identifier": identifier,
            "timestamp": NOON,
        },
        options or None,  # type: ignore[arg-type]
    )


def test_injected_500_raises_api_error_and_applies_nothing(
    stripe_client: stripe.StripeClient, customer: str, emulator_at_noon: EmulatorControl
) -> None:
    emulator_at_noon.set_faults(error_500_rate=1.0)
    with pytest.raises(stripe.APIError) as raised:
        send(stripe_client, customer, "e1")
    assert raised.value.http_status == 500
    emulator_at_noon.set_faults()
    assert emulator_at_noon.meter_events() == []
    assert emulator_at_noon.request_count()["500"] == 1


def test_injected_429_raises_rate_limit_error(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl
) -> None:
    emulator_at_noon.set_faults(error_429_rate=1.0)
    with pytest.raises(stripe.RateLimitError) as raised:
        stripe_client.v1.customers.list()
    assert raised.value.http_status == 429
    assert raised.value.error is not None
    assert raised.value.error.code == "rate_limit"


def test_dropped_connection_after_the_event_was_applied(
    stripe_client: stripe.StripeClient, customer: str, emulator_at_noon: EmulatorControl
) -> None:
    emulator_at_noon.set_faults(drop_rate=1.0)
    with pytest.raises(stripe.APIConnectionError):
        send(stripe_client, customer, "lost", idempotency_key="ik-lost")
    emulator_at_noon.set_faults()
    assert [e["identifier"] for e in emulator_at_noon.meter_events()] == ["lost"]
    replay = send(stripe_client, customer, "lost", idempotency_key="ik-lost")
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(emulator_at_noon.meter_events()) == 1
    assert emulator_at_noon.request_count()["dropped"] == 1


def test_sdk_retry_after_a_drop_is_replayed_not_double_counted(
    emulator_server: StripeEmulator, customer: str, emulator_at_noon: EmulatorControl
) -> None:
    seed = next(
        s for s in range(1000) if (rng := random.Random(s)).random() < 0.5 and rng.random() >= 0.5
    )
    emulator_at_noon.set_faults(drop_rate=0.5, seed=seed)
    retrying = make_client(emulator_server.url, retries=2)
    send(retrying, customer, "retried")
    assert len(emulator_at_noon.meter_events()) == 1
    counts = emulator_at_noon.request_count()
    assert counts["dropped"] == 1
    assert counts["200"] >= 1


def test_latency_is_added(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl
) -> None:
    emulator_at_noon.set_faults(latency_ms=150)
    started = time.monotonic()
    stripe_client.v1.customers.list()
    assert time.monotonic() - started >= 0.15


def test_requests_per_second_limit(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl
) -> None:
    emulator_at_noon.set_rate_limit(2)
    stripe_client.v1.customers.list()
    stripe_client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError):
        stripe_client.v1.customers.list()
    emulator_at_noon.set_rate_limit(None)
    stripe_client.v1.customers.list()


def test_one_concurrent_call_per_customer_per_meter(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl
) -> None:
    a = stripe_client.v1.customers.create({}).id
    b = stripe_client.v1.customers.create({}).id
    emulator_at_noon.set_faults(latency_ms=400)
    outcomes: dict[str, str] = {}

    def call(name: str, customer: str) -> None:
        try:
            send(stripe_client, customer, name)
            outcomes[name] = "ok"
        except stripe.RateLimitError:
            outcomes[name] = "429"

    first = threading.Thread(target=call, args=("a-first", a))
    first.start()
    time.sleep(0.15)
    others = [
        threading.Thread(target=call, args=("a-second", a)),
        threading.Thread(target=call, args=("b-only", b)),
    ]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join()
    assert outcomes == {"a-first": "ok", "a-second": "429", "b-only": "ok"}
