"""The emulator held to Stripe's published contract (the pinned stripe SDK's generated types):
parameters refused as Stripe refuses them, objects in the shape of the API version asked for,
Basic auth, pausing and resuming, and the switch for negative meter values.

Every other emulator test also runs in contract mode (support/fixtures.py), so each response any
test gets is checked against its published shape; the tests here prove the checks themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import requests
import stripe

from billing_pipeline_tests.support.invoicing import (
    advance_test_clock,
    metered_price,
    price_for_event,
)
from billing_pipeline_tests.support.stripe import DAY, NOON, make_client
from stripe_emulator import EmulatorControl, StripeEmulator
from stripe_emulator.app import create_app
from stripe_emulator.request_rules import ENDPOINT_PARAMS
from stripe_emulator.response_shapes import response_violations
from stripe_emulator.sdk_types import PINNED_API_VERSION, PINNED_SDK


def _refused(call: Callable[[], Any], message: str, param: str | None = None) -> None:
    with pytest.raises(stripe.InvalidRequestError, match=message) as raised:
        call()
    if param is not None:
        assert raised.value.param == param


def test_the_rules_come_from_the_pinned_sdk_and_cover_every_endpoint(
    emulator_server: StripeEmulator,
) -> None:
    """An SDK upgrade changes the published rules: it must be a deliberate, visible change."""
    assert (stripe.VERSION, stripe.api_version) == (PINNED_SDK, PINNED_API_VERSION)
    app = create_app(emulator_server._runtime)  # type: ignore[arg-type]
    rules = app.url_map.iter_rules()
    api_views = {rule.endpoint for rule in rules if rule.rule.startswith(("/v1/", "/v2/"))}
    assert api_views == set(ENDPOINT_PARAMS)


def test_unknown_parameters_are_refused_on_the_meter_endpoints(
    stripe_client: stripe.StripeClient, customer: str, readings_meter: Any
) -> None:
    """A typo in the pipeline's parameters fails its tests, as it would fail in production."""
    event: Any = {
        "event_name": "readings",
        "payload": {"stripe_customer_id": customer, "value": "3"},
        "identifer": "typo",
    }
    _refused(
        lambda: stripe_client.v1.billing.meter_events.create(event),
        "Received unknown parameter: identifer",
        "identifer",
    )
    meter: Any = {
        "display_name": "X",
        "event_name": "x",
        "default_aggregation": {"formula": "sum", "formla": "sum"},
    }
    _refused(
        lambda: stripe_client.v1.billing.meters.create(meter),
        r"Received unknown parameter: default_aggregation\[formla\]",
    )
    summaries: Any = {
        "customer": customer,
        "start_time": NOON - DAY,
        "end_time": NOON,
        "value_grouping_windw": "day",
    }
    _refused(
        lambda: stripe_client.v1.billing.meters.event_summaries.list(readings_meter.id, summaries),
        "Received unknown parameter: value_grouping_windw",
    )
    # Nothing was stored by the refused event.
    listed = stripe_client.v1.billing.meters.event_summaries.list(
        readings_meter.id, {"customer": customer, "start_time": NOON - DAY, "end_time": NOON}
    )
    assert [summary.aggregated_value for summary in listed.data] == [0]


def test_types_enums_and_required_parameters_are_checked(
    stripe_client: stripe.StripeClient, customer: str, readings_meter: Any
) -> None:
    event: Any = {
        "event_name": "readings",
        "payload": {"stripe_customer_id": customer, "value": "3"},
        "timestamp": "yesterday",
    }
    _refused(
        lambda: stripe_client.v1.billing.meter_events.create(event),
        "Invalid integer: yesterday",
        "timestamp",
    )
    meter: Any = {"display_name": "X", "event_name": "x", "default_aggregation": {"formula": "avg"}}
    _refused(
        lambda: stripe_client.v1.billing.meters.create(meter),
        r"Invalid default_aggregation\[formula\]: must be one of count, last, or sum",
        "default_aggregation[formula]",
    )
    _refused(
        lambda: stripe_client.v1.billing.meters.create({"display_name": "X", "event_name": "x"}),  # type: ignore[typeddict-item]
        "Missing required param: default_aggregation",
    )
    # Valid for Stripe, not emulated: refused rather than answered unexpanded.
    _refused(
        lambda: stripe_client.v1.customers.retrieve(customer, {"expand": ["test_clock"]}),
        "does not emulate expand",
        "expand",
    )


def test_length_limits_of_the_spec_are_enforced(stripe_client: stripe.StripeClient) -> None:
    def meter(display_name: str, event_name: str) -> Any:
        return stripe_client.v1.billing.meters.create(
            {
                "display_name": display_name,
                "event_name": event_name,
                "default_aggregation": {"formula": "sum"},
            }
        )

    _refused(lambda: meter("m" * 251, "long"), "must be at most 250 characters", "display_name")
    assert meter("m" * 250, "long").display_name == "m" * 250
    _refused(lambda: meter("M", "e" * 101), "must be at most 100 characters", "event_name")
    # The SDK docstring's "up to *150 characters*" for a customer's business name.
    _refused(
        lambda: stripe_client.v1.customers.create({"business_name": "n" * 151}),
        "must be at most 150 characters",
    )
    _refused(
        lambda: stripe_client.v1.customers.create({"metadata": {"k": "v" * 501}}),
        "Metadata values can have up to 500 characters",
    )


def test_documented_subscription_parameters_are_accepted(
    stripe_client: stripe.StripeClient, customer: str
) -> None:
    """`proration_behavior` is documented; metered prices have nothing to prorate."""
    price = price_for_event(stripe_client, "readings")
    created = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": price}], "proration_behavior": "none"}
    )
    updated = stripe_client.v1.subscriptions.update(
        created.id, {"proration_behavior": "always_invoice", "description": "Readings"}
    )
    assert updated.description == "Readings"
    _refused(
        lambda: stripe_client.v1.subscriptions.update(
            created.id,
            {"proration_behavior": "sometimes"},
        ),
        "Invalid proration_behavior: must be one of always_invoice, create_prorations, or none",
    )
    # A documented parameter whose effect the emulator lacks is refused and says so.
    _refused(
        lambda: stripe_client.v1.subscriptions.create(
            {"customer": customer, "items": [{"price": price}], "days_until_due": 3}
        ),
        "does not emulate the parameter days_until_due",
    )
    # An item must name a price Stripe knows.
    with pytest.raises(stripe.InvalidRequestError, match="No such price: 'price_nope'"):
        stripe_client.v1.subscriptions.create(
            {"customer": customer, "items": [{"price": "price_nope"}]}
        )


def test_objects_come_in_the_shape_of_the_pinned_api_version(
    stripe_client: stripe.StripeClient, emulator_server: StripeEmulator, customer: str
) -> None:
    price = price_for_event(stripe_client, "readings")
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": price}]}
    )
    assert subscription.billing_schedules == []
    assert subscription.customer_account is None
    assert subscription.managed_payments is None
    item = subscription["items"].data[0]
    assert (item.plan.object, item.plan.id, item.plan.usage_type) == ("plan", price, "metered")
    fetched = stripe_client.v1.customers.retrieve(customer)
    assert (fetched.discount, fetched.next_invoice_sequence) == (None, 1)
    # Another API version is refused, never answered in a shape it did not ask for.
    answer = requests.get(
        f"{emulator_server.url}/v1/customers/{customer}",
        headers={"Authorization": "Bearer sk_test_x", "Stripe-Version": "2025-03-31.basil"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert "2026-10-28.endive" in answer.json()["error"]["message"]


def test_invoices_render_payment_settings_and_advance_the_customers_sequence(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": NOON}).id
    customer = stripe_client.v1.customers.create({"name": "Seq", "test_clock": clock}).id
    price = metered_price(stripe_client, make_meter("seq").id, "Seq")
    stripe_client.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
    advance_test_clock(stripe_client, clock, NOON + 32 * DAY)
    [invoice] = stripe_client.v1.invoices.list({"customer": customer}).data
    assert invoice.status == "paid"
    assert invoice.payment_settings.payment_method_types is None
    assert stripe_client.v1.customers.retrieve(customer).next_invoice_sequence == 2


def test_a_response_in_another_shape_is_a_contract_violation(
    stripe_client: stripe.StripeClient, customer: str
) -> None:
    """The contract mode every test runs in: each way a shape can drift is caught."""
    price = price_for_event(stripe_client, "readings")
    body = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": price}]}
    ).to_dict()
    assert response_violations(body) == []
    drifted = copy.deepcopy(body)
    del drifted["billing_schedules"]
    drifted["current_period_end"] = 0  # basil moved it to the items
    drifted["items"]["data"][0]["plan"] = None
    drifted["status"] = "sleeping"
    assert sorted(response_violations(drifted)) == [
        "billing_schedules: missing from Subscription",
        "current_period_end: not a field of Subscription",
        "items.data[0].plan: null, but SubscriptionItem declares it non-null",
        "status: 'sleeping' is not one of "
        "active, canceled, incomplete, incomplete_expired, past_due, paused, trialing, unpaid",
    ]


def test_webhook_events_are_checked_as_they_are_produced(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl, customer: str
) -> None:
    """Events reach the pipeline by delivery, not only by `GET /v1/events`: each is checked
    when produced, and the fixtures fail a test that produced a departing one."""
    before = emulator_at_noon.contract()["checked"].get("event customer.subscription.created", 0)
    price = price_for_event(stripe_client, "readings")
    stripe_client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    stripe_client.v1.customers.list()  # any request hands the new event over
    checked = emulator_at_noon.contract()["checked"]
    assert checked["event customer.subscription.created"] == before + 1
    assert checked["create_subscription"] >= 1


def test_basic_and_bearer_authentication(
    emulator_server: StripeEmulator, emulator_at_noon: EmulatorControl
) -> None:
    """`curl -u sk_test_…:` is Stripe's documented way; a live or missing key is a 401."""
    url = f"{emulator_server.url}/v1/customers"
    assert requests.get(url, auth=("sk_test_curl", ""), timeout=10).status_code == 200
    bearer = {"Authorization": "Bearer sk_test_curl"}
    assert requests.get(url, headers=bearer, timeout=10).status_code == 200
    assert requests.get(url, auth=("sk_live_curl", ""), timeout=10).status_code == 401
    assert requests.get(url, timeout=10).status_code == 401


def _subscription_on_clock(
    client: stripe.StripeClient, make_meter: Callable[..., Any], **params: Any
) -> tuple[str, Any]:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": NOON}).id
    customer = client.v1.customers.create({"name": "Paused", "test_clock": clock}).id
    price = metered_price(client, make_meter("pausing").id, "Pausing")
    create: Any = {"customer": customer, "items": [{"price": price.id}], **params}
    return clock, client.v1.subscriptions.create(create)


def _event_types(client: stripe.StripeClient, subscription_id: str) -> list[str]:
    listed = client.v1.events.list({"limit": 100}).data
    return [
        event.type
        for event in reversed(listed)
        if event.type.startswith("customer.subscription.")
        and event.data.object["id"] == subscription_id
    ]


def test_a_trial_without_payment_method_pauses_and_resume_restarts_billing(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    clock, created = _subscription_on_clock(
        stripe_client,
        make_meter,
        trial_period_days=7,
        trial_settings={"end_behavior": {"missing_payment_method": "pause"}},
    )
    assert (created.status, created.trial_start, created.trial_end) == (
        "trialing",
        NOON,
        NOON + 7 * DAY,
    )
    advance_test_clock(stripe_client, clock, NOON + 8 * DAY)
    paused = stripe_client.v1.subscriptions.retrieve(created.id)
    assert paused.status == "paused"
    assert stripe_client.v1.invoices.list({"subscription": created.id}).data == []
    resumed = stripe_client.v1.subscriptions.resume(
        created.id, {"billing_cycle_anchor": {"type": "now"}}
    )
    item = resumed["items"].data[0]
    assert resumed.status == "active"
    assert (resumed.billing_cycle_anchor, item.current_period_start) == (NOON + 8 * DAY,) * 2
    assert _event_types(stripe_client, created.id) == [
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.paused",
        "customer.subscription.updated",
        "customer.subscription.resumed",
    ]
    _refused(
        lambda: stripe_client.v1.subscriptions.resume(created.id),
        "only paused subscriptions can be resumed",
    )


@pytest.mark.parametrize(
    ("behavior", "status", "period_start"),
    [("create_invoice", "active", NOON + 7 * DAY), ("cancel", "canceled", NOON)],
)
def test_a_trial_ends_as_its_missing_payment_method_behavior_says(
    stripe_client: stripe.StripeClient,
    make_meter: Callable[..., Any],
    behavior: str,
    status: str,
    period_start: int,
) -> None:
    clock, created = _subscription_on_clock(
        stripe_client,
        make_meter,
        trial_end=NOON + 7 * DAY,
        trial_settings={"end_behavior": {"missing_payment_method": behavior}},
    )
    advance_test_clock(stripe_client, clock, NOON + 8 * DAY)
    ended = stripe_client.v1.subscriptions.retrieve(created.id)
    assert ended.status == status
    assert ended["items"].data[0].current_period_start == period_start
    # Usage in a trial is free: no invoice for it.
    assert stripe_client.v1.invoices.list({"subscription": created.id}).data == []


@pytest.mark.parametrize(
    ("behavior", "status"),
    [("keep_as_draft", "draft"), ("void", "void"), ("mark_uncollectible", "uncollectible")],
)
def test_paused_collection_leaves_invoices_unpaid_as_the_behavior_says(
    stripe_client: stripe.StripeClient,
    make_meter: Callable[..., Any],
    behavior: str,
    status: str,
) -> None:
    clock, created = _subscription_on_clock(stripe_client, make_meter)
    paused = stripe_client.v1.subscriptions.update(
        created.id,
        {"pause_collection": {"behavior": behavior}},
    )
    assert paused.pause_collection is not None
    assert paused.pause_collection.behavior == behavior
    assert paused.status == "active"
    advance_test_clock(stripe_client, clock, NOON + 32 * DAY)
    [invoice] = stripe_client.v1.invoices.list({"subscription": created.id}).data
    assert (invoice.status, invoice.amount_paid) == (status, 0)
    unpaused = stripe_client.v1.subscriptions.update(created.id, {"pause_collection": ""})
    assert unpaused.pause_collection is None


@pytest.mark.parametrize("mode", ["allowed", "refused"])
def test_negative_meter_values_follow_the_switch(
    stripe_client: stripe.StripeClient,
    emulator_at_noon: EmulatorControl,
    emulator_server: StripeEmulator,
    customer: str,
    readings_meter: Any,
    mode: str,
) -> None:
    """Stripe's v2 reference: "The value must be a positive integer"; v1 states no sign rule."""
    emulator_at_noon.set_negative_values(mode)

    def send(value: str) -> Any:
        return stripe_client.v1.billing.meter_events.create(
            {"event_name": "readings", "payload": {"stripe_customer_id": customer, "value": value}}
        )

    send("5")
    if mode == "refused":
        _refused(lambda: send("-2"), "must be a positive integer", "payload[value]")
        session = stripe_client.v2.billing.meter_event_session.create()
        streamer = make_client(emulator_server.url, key=session.authentication_token)
        event: Any = {
            "event_name": "readings",
            "payload": {"stripe_customer_id": customer, "value": "-2"},
        }
        streamer.v2.billing.meter_event_stream.create({"events": [event]})
        [report] = emulator_at_noon.error_reports()
        assert report["code"] == "meter_event_invalid_value"
    else:
        send("-2")
    summaries = stripe_client.v1.billing.meters.event_summaries.list(
        readings_meter.id, {"customer": customer, "start_time": NOON - DAY, "end_time": NOON + 60}
    )
    assert sum(s.aggregated_value for s in summaries.data) == (5 if mode == "refused" else 3)
