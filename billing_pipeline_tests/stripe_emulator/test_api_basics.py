"""Authentication, Stripe's envelope, customers, meters, pagination and Idempotency-Key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
import stripe

from billing_pipeline_tests.support.stripe import NOON, make_client
from stripe_emulator import EmulatorControl, StripeEmulator
from stripe_emulator.forms import decode_pairs
from stripe_emulator.ids import new_id

# Every test here starts from an empty emulator whose clock reads NOON.
pytestmark = pytest.mark.usefixtures("emulator_at_noon")


def test_missing_api_key_is_a_401_in_stripes_envelope(emulator_server: StripeEmulator) -> None:
    response = requests.get(f"{emulator_server.url}/v1/customers", timeout=5)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("You did not provide an API key.")


@pytest.mark.parametrize("key", ["sk_live_realkey1234", "not-a-key", "sk_test_"])
def test_malformed_or_live_key_raises_authentication_error(
    emulator_server: StripeEmulator, key: str
) -> None:
    with pytest.raises(stripe.AuthenticationError) as raised:
        make_client(emulator_server.url, key=key).v1.customers.list()
    assert raised.value.http_status == 401
    assert "Invalid API Key provided" in str(raised.value.user_message)
    assert key[-4:] in str(raised.value.user_message)


def test_unknown_route_is_a_stripe_404(emulator_server: StripeEmulator) -> None:
    response = requests.get(
        f"{emulator_server.url}/v1/nothing_here",
        headers={"Authorization": "Bearer sk_test_x"},
        timeout=5,
    )
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("Unrecognized request URL (GET:")


def test_customers_create_retrieve_list_and_paginate(stripe_client: stripe.StripeClient) -> None:
    created = [
        stripe_client.v1.customers.create(
            {"email": f"c{i}@example.com", "metadata": {"org": str(i)}}
        )
        for i in range(12)
    ]
    fetched = stripe_client.v1.customers.retrieve(created[3].id)
    assert fetched.email == "c3@example.com"
    assert fetched.metadata is not None
    assert fetched.metadata["org"] == "3"
    assert fetched.created == NOON
    first_page = stripe_client.v1.customers.list({"limit": 5})
    assert first_page.has_more
    assert [c.id for c in first_page.data] == [c.id for c in reversed(created)][:5]
    every = [c.id for c in stripe_client.v1.customers.list({"limit": 5}).auto_paging_iter()]
    assert sorted(every) == sorted(c.id for c in created)
    assert len(every) == 12


def test_unknown_customer_is_resource_missing(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.customers.retrieve("cus_missing")
    assert raised.value.http_status == 404
    assert raised.value.code == "resource_missing"


def test_meter_create_list_retrieve_deactivate(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    meter = make_meter(
        "sensor_readings",
        "sum",
        customer_mapping={"event_payload_key": "org_customer", "type": "by_id"},
        value_settings={"event_payload_key": "readings"},
    )
    assert meter.object == "billing.meter"
    assert meter.status == "active"
    assert meter.customer_mapping.event_payload_key == "org_customer"
    assert meter.value_settings.event_payload_key == "readings"
    assert stripe_client.v1.billing.meters.retrieve(meter.id).event_name == "sensor_readings"
    gauge = make_meter("active_sensors", "last")
    assert gauge.default_aggregation.formula == "last"
    assert {m.id for m in stripe_client.v1.billing.meters.list().data} == {meter.id, gauge.id}
    deactivated = stripe_client.v1.billing.meters.deactivate(gauge.id)
    assert deactivated.status == "inactive"
    assert deactivated.status_transitions.deactivated_at == NOON
    active = stripe_client.v1.billing.meters.list({"status": "active"}).data
    assert [m.id for m in active] == [meter.id]


def test_meter_rejects_bad_formula_and_duplicate_event_name(
    make_meter: Callable[..., Any],
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        make_meter("readings", "max")
    assert raised.value.param == "default_aggregation[formula]"
    make_meter("readings", "sum")
    with pytest.raises(stripe.InvalidRequestError):
        make_meter("readings", "count")


def test_idempotency_key_replays_the_first_response(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl
) -> None:
    first = stripe_client.v1.customers.create(
        {"email": "a@example.com"}, {"idempotency_key": "key-1"}
    )
    again = stripe_client.v1.customers.create(
        {"email": "a@example.com"}, {"idempotency_key": "key-1"}
    )
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(stripe_client.v1.customers.list().data) == 1
    with pytest.raises(stripe.IdempotencyError):
        stripe_client.v1.customers.create({"email": "b@example.com"}, {"idempotency_key": "key-1"})


def test_form_decoding_rebuilds_nested_keys_and_lists() -> None:
    decoded = decode_pairs(
        [
            ("payload[value]", "3"),
            ("payload[stripe_customer_id]", "cus_1"),
            ("default_aggregation[formula]", "sum"),
            ("expand[0]", "a"),
            ("expand[1]", "b"),
            ("event_name", "x"),
        ]
    )
    assert decoded == {
        "payload": {"value": "3", "stripe_customer_id": "cus_1"},
        "default_aggregation": {"formula": "sum"},
        "expand": ["a", "b"],
        "event_name": "x",
    }


def test_ids_are_the_prefix_and_letters_and_digits_of_the_asked_length() -> None:
    ids = [new_id("cus_", 14) for _ in range(200)]
    assert all(i.startswith("cus_") and len(i) == 18 and i[4:].isalnum() for i in ids)
    assert all(i[4:].isascii() for i in ids)
    assert len(set(ids)) == 200
