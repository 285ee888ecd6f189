"""Subscriptions and the event list, through the official SDK over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe

from billing_pipeline_tests.support.invoicing import price_for_event
from billing_pipeline_tests.support.network import free_port
from billing_pipeline_tests.support.stripe import DAY, NOON, WebhookRecorder
from stripe_emulator import EmulatorControl, StripeEmulator

LIFECYCLE = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.updated",
    "customer.subscription.deleted",
]


def subscribe(client: stripe.StripeClient, customer: str, **params: Any) -> Any:
    prices = [price_for_event(client, "sensors"), price_for_event(client, "readings")]
    create: Any = {
        "customer": customer,
        "items": [{"price": price} for price in prices],
        "metadata": {"organization_id": "7"},
        **params,
    }
    return client.v1.subscriptions.create(create)


def lifecycle(client: stripe.StripeClient, control: EmulatorControl, customer: str) -> str:
    """Created incomplete, paid, cancellation scheduled, canceled: one minute apart."""
    subscription = subscribe(client, customer, payment_behavior="default_incomplete")
    control.advance_clock(60)
    control.settle_subscription_payment(subscription.id)
    control.advance_clock(60)
    client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    control.advance_clock(60)
    client.v1.subscriptions.cancel(subscription.id)
    subscription_id: str = subscription.id
    return subscription_id


def test_a_subscription_has_stripes_shape_and_lifecycle(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl, customer: str
) -> None:
    created = subscribe(stripe_client, customer, payment_behavior="default_incomplete")
    assert created.status == "incomplete"
    assert [item.price.recurring.meter for item in created["items"].data] == [
        meter.id for meter in reversed(stripe_client.v1.billing.meters.list().data)
    ]
    item = created["items"].data[0]
    # One calendar month from 2025-06-15 12:00 UTC.
    assert (item.current_period_start, item.current_period_end) == (NOON, NOON + 30 * DAY)
    assert created.start_date == created.billing_cycle_anchor == NOON

    paid = emulator_at_noon.settle_subscription_payment(created.id)
    assert paid["status"] == "active"
    scheduled = stripe_client.v1.subscriptions.update(created.id, {"cancel_at_period_end": True})
    assert (scheduled.cancel_at, scheduled.canceled_at) == (NOON + 30 * DAY, NOON)
    emulator_at_noon.advance_clock(10)
    canceled = stripe_client.v1.subscriptions.cancel(created.id)
    assert (canceled.status, canceled.ended_at, canceled.canceled_at) == (
        "canceled",
        NOON + 10,
        NOON,
    )

    retrieved = stripe_client.v1.subscriptions.retrieve(created.id)
    assert retrieved.to_dict() == canceled.to_dict()
    # Stripe never reactivates a canceled subscription: only metadata may change.
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.subscriptions.update(created.id, {"cancel_at_period_end": False})
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.subscriptions.cancel(created.id)
    relabeled = stripe_client.v1.subscriptions.update(created.id, {"metadata": {"note": "x"}})
    assert relabeled.metadata.to_dict() == {"organization_id": "7", "note": "x"}
    # Listing hides canceled subscriptions unless asked.
    assert stripe_client.v1.subscriptions.list({"customer": customer}).data == []
    everything = stripe_client.v1.subscriptions.list({"status": "all"}).data
    assert [s.id for s in everything] == [created.id]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_client.v1.subscriptions.retrieve("sub_missing")
    assert missing.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.subscriptions.create({"customer": "cus_nobody", "items": [{"price": "p"}]})


def test_every_change_is_an_event_with_its_snapshot_and_previous_attributes(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl, customer: str
) -> None:
    subscription_id = lifecycle(stripe_client, emulator_at_noon, customer)

    events = list(stripe_client.v1.events.list({"limit": 2}).auto_paging_iter())

    assert [e.type for e in events] == list(reversed(LIFECYCLE))
    assert [e.created for e in events] == [NOON + 180, NOON + 120, NOON + 60, NOON]
    deleted, scheduled, paid, created = (e.to_dict() for e in events)
    assert created["data"]["object"]["status"] == "incomplete"
    assert paid["data"]["previous_attributes"] == {"status": "incomplete"}
    assert paid["request"] == {"id": None, "idempotency_key": None}
    assert scheduled["data"]["previous_attributes"]["cancel_at_period_end"] is False
    assert scheduled["request"]["id"].startswith("req_")
    assert deleted["data"]["object"]["status"] == "canceled"
    assert "previous_attributes" not in deleted["data"]
    assert {e["data"]["object"]["id"] for e in (deleted, scheduled, paid, created)} == {
        subscription_id
    }
    assert stripe_client.v1.events.retrieve(created["id"]).type == LIFECYCLE[0]


def test_the_event_list_filters_like_stripe(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl, customer: str
) -> None:
    lifecycle(stripe_client, emulator_at_noon, customer)

    def types(**filters: Any) -> list[str]:
        params: Any = {"limit": 100, **filters}
        return [e.type for e in stripe_client.v1.events.list(params).data]

    assert types(created={"gte": NOON + 60, "lt": NOON + 180}) == LIFECYCLE[1:3]
    assert types(created={"gt": NOON + 60, "lte": NOON + 180}) == list(reversed(LIFECYCLE[2:]))
    assert types(created=NOON) == LIFECYCLE[:1]
    assert types(type="customer.subscription.deleted") == LIFECYCLE[3:]
    assert types(type="customer.subscription.*") == list(reversed(LIFECYCLE))
    assert types(types=["customer.subscription.created", "invoice.paid"]) == LIFECYCLE[:1]
    # No endpoint is configured, so nothing is waiting for a delivery.
    assert types(delivery_success=False) == []
    assert len(types(delivery_success=True)) == 4
    with pytest.raises(stripe.InvalidRequestError):
        types(type="customer.subscription.created", types=["invoice.paid"])
    first = stripe_client.v1.events.list({"limit": 3})
    assert first.has_more
    rest = stripe_client.v1.events.list({"limit": 3, "starting_after": first.data[-1].id})
    assert (len(rest.data), rest.has_more) == (1, False)
    back = stripe_client.v1.events.list({"limit": 3, "ending_before": rest.data[0].id})
    assert [e.id for e in back.data] == [e.id for e in first.data]
    # Stripe keeps events for 30 days.
    emulator_at_noon.set_clock(NOON + 30 * DAY + 1)
    assert types() == list(reversed(LIFECYCLE[1:]))
    emulator_at_noon.set_clock(NOON + 30 * DAY + 181)
    assert types() == []


def test_events_are_delivered_signed_and_undelivered_ones_stay_listed(
    emulator_server: StripeEmulator,
    stripe_client: stripe.StripeClient,
    emulator_at_noon: EmulatorControl,
    customer: str,
    webhook_recorder: WebhookRecorder,
) -> None:
    emulator_at_noon.set_webhook_endpoint(webhook_recorder.url)
    subscription = subscribe(stripe_client, customer)
    [delivery] = webhook_recorder.wait(1)
    event = stripe.Webhook.construct_event(
        delivery.body.decode(), delivery.headers["Stripe-Signature"], emulator_server.webhook_secret
    )
    assert (event.type, event.data.object["id"]) == (
        "customer.subscription.created",
        subscription.id,
    )
    # The recorder has the body before the emulator has its 200: wait for the emulator's record.
    _wait_for_deliveries(emulator_at_noon, 1)
    # Thin events go to the event destination, not here.
    assert stripe_client.v1.events.list({"delivery_success": False}).data == []

    emulator_at_noon.set_webhook_endpoint(f"http://127.0.0.1:{free_port()}/webhooks/stripe")
    stripe_client.v1.subscriptions.cancel(subscription.id)
    _wait_for_deliveries(emulator_at_noon, 2)
    assert str(emulator_at_noon.webhook_deliveries()[-1]["status"]).startswith("error")
    [missed] = stripe_client.v1.events.list({"delivery_success": False}).data
    assert (missed.type, missed.pending_webhooks) == ("customer.subscription.deleted", 1)


def _wait_for_deliveries(emulator: EmulatorControl, count: int) -> None:
    """Until the emulator has recorded `count` delivery outcomes (it sends from a thread)."""
    deadline = time.monotonic() + 5.0
    while len(emulator.webhook_deliveries()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
