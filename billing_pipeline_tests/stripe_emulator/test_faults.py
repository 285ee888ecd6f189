"""Injected faults, rate limits and Stripe's one-call-per-customer-per-meter rule."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from billing_pipeline_tests.stripe_emulator.conftest import NOON, make_client
from stripe_emulator import EmulatorControl, StripeEmulator


def send(client: stripe.StripeClient, customer: str, identifier: str, **options: Any) -> Any:
    return client.v1.billing.meter_events.create(
        {
            "event_name": "readings",
            "payload": {"stripe_customer_id": customer, "value": "1"},
            "identifier": identifier,
            "timestamp": NOON,
        },
        options or None,  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def meter(make_meter: Callable[..., Any]) -> Any:
    return make_meter("readings", "sum")


def test_injected_500_raises_api_error_and_applies_nothing(
    client: stripe.StripeClient, customer: str, control: EmulatorControl
) -> None:
    control.set_faults(error_500_rate=1.0)
    with pytest.raises(stripe.APIError) as raised:
        send(client, customer, "e1")
    assert raised.value.http_status == 500
    control.set_faults()
    assert control.meter_events() == []
    assert control.request_count()["500"] == 1


def test_injected_429_raises_rate_limit_error(
    client: stripe.StripeClient, control: EmulatorControl
) -> None:
    control.set_faults(error_429_rate=1.0)
    with pytest.raises(stripe.RateLimitError) as raised:
        client.v1.customers.list()
    assert raised.value.http_status == 429
    assert raised.value.error is not None
    assert raised.value.error.code == "rate_limit"


def test_dropped_connection_after_the_event_was_applied(
    client: stripe.StripeClient, customer: str, control: EmulatorControl
) -> None:
    control.set_faults(drop_rate=1.0)
    with pytest.raises(stripe.APIConnectionError):
        send(client, customer, "lost", idempotency_key="ik-lost")
    control.set_faults()
    assert [e["identifier"] for e in control.meter_events()] == ["lost"]
    replay = send(client, customer, "lost", idempotency_key="ik-lost")
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(control.meter_events()) == 1
    assert control.request_count()["dropped"] == 1


def test_sdk_retry_after_a_drop_is_replayed_not_double_counted(
    emulator: StripeEmulator, customer: str, control: EmulatorControl
) -> None:
    seed = next(
        s for s in range(1000) if (rng := random.Random(s)).random() < 0.5 and rng.random() >= 0.5
    )
    control.set_faults(drop_rate=0.5, seed=seed)
    retrying = make_client(emulator.url, retries=2)
    send(retrying, customer, "retried")
    assert len(control.meter_events()) == 1
    counts = control.request_count()
    assert counts["dropped"] == 1
    assert counts["200"] >= 1


def test_latency_is_added(client: stripe.StripeClient, control: EmulatorControl) -> None:
    control.set_faults(latency_ms=150)
    started = time.monotonic()
    client.v1.customers.list()
    assert time.monotonic() - started >= 0.15


def test_requests_per_second_limit(client: stripe.StripeClient, control: EmulatorControl) -> None:
    control.set_rate_limit(2)
    client.v1.customers.list()
    client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.list()
    control.set_rate_limit(None)
    client.v1.customers.list()


def test_one_concurrent_call_per_customer_per_meter(
    client: stripe.StripeClient, control: EmulatorControl
) -> None:
    a = client.v1.customers.create({}).id
    b = client.v1.customers.create({}).id
    control.set_faults(latency_ms=400)
    outcomes: dict[str, str] = {}

    def call(name: str, customer: str) -> None:
        try:
            send(client, customer, name)
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
