"""Events about one subscription that tie on `created`: Stripe's current state decides.

The events are the emulator's own (its subscription API emits them, as Stripe does), delivered
signed over HTTP to the receiver in the order each test chooses, and applied by the Dagster job
with the Stripe resource on the emulator.
"""

from __future__ import annotations

from typing import Any

import pytest

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline_tests.support.dagster_runs import Billing, pipeline_resources, run_webhook_job
from billing_pipeline_tests.support.invoicing import price_for_event
from billing_pipeline_tests.support.webhooks import (
    create_organization,
    inbox_rows,
    post_event,
    subscription_row,
)

START = 1_780_000_000  # 2026-05-28T20:26:40Z
CREATED = "customer.subscription.created"
UPDATED = "customer.subscription.updated"
DELETED = "customer.subscription.deleted"


def emitted(billing: Billing, subscription_id: str) -> dict[str, dict[str, Any]]:
    """The subscription's events from Stripe's event list, by type (one of each here)."""
    events = billing.stripe_billing.client.v1.events.list({"limit": 100}).auto_paging_iter()
    mine = [e.to_dict(for_json=True) for e in events]
    mine = [e for e in mine if e["data"]["object"]["id"] == subscription_id]
    by_type = {e["type"]: e for e in mine}
    assert len(by_type) == len(mine)
    return by_type


def new_subscription(billing: Billing, organization: int, **params: Any) -> str:
    stripe = billing.stripe_billing.client
    customer = stripe.v1.customers.create({"name": f"Org {organization}"}).id
    billing.emulator.set_clock(START)
    create: Any = {
        "customer": customer,
        "items": [
            {"price": price_for_event(stripe, "active_sensors")},
            {"price": price_for_event(stripe, "temperature_readings")},
        ],
        "metadata": {"organization_id": str(organization)},
        **params,
    }
    subscription_id: str = stripe.v1.subscriptions.create(create).id
    return subscription_id


@pytest.mark.parametrize(
    "first", ["customer.subscription.deleted", "customer.subscription.updated"]
)
def test_same_second_deleted_and_updated_end_canceled_in_either_order(
    billing: Billing, receiver_url: str, first: str
) -> None:
    organization = create_organization(billing.engine)
    subscription_id = new_subscription(billing, organization)
    stripe = billing.stripe_billing.client
    # Both changes in one second of Stripe's clock: a scheduled cancellation, then an
    # immediate one.
    billing.emulator.set_clock(START + 60)
    stripe.v1.subscriptions.update(subscription_id, {"cancel_at_period_end": True})
    billing.emulator.set_clock(START + 60)
    stripe.v1.subscriptions.cancel(subscription_id)
    events = emitted(billing, subscription_id)
    second = ({DELETED, UPDATED} - {first}).pop()
    assert events[first]["created"] == events[second]["created"] == START + 60

    assert post_event(receiver_url, events[CREATED]) == 200
    assert run_webhook_job(billing.instance, billing.resources()).success
    assert post_event(receiver_url, events[first]) == 200
    assert run_webhook_job(billing.instance, billing.resources()).success
    assert post_event(receiver_url, events[second]) == 200
    assert run_webhook_job(billing.instance, billing.resources()).success

    row = subscription_row(billing.engine, subscription_id)
    current = stripe.v1.subscriptions.retrieve(subscription_id)
    assert current.status == "canceled"
    assert row["status"] == "canceled"
    assert row["cancel_at_period_end"] is False
    assert int(row["ended_at"].timestamp()) == current.ended_at == START + 60
    assert int(row["canceled_at"].timestamp()) == current.canceled_at
    assert {r["status"] for r in inbox_rows(billing.engine)} == {InboxStatus.PROCESSED}


def test_same_second_created_delivered_after_its_update_leaves_the_subscription_active(
    billing: Billing, receiver_url: str
) -> None:
    organization = create_organization(billing.engine)
    subscription_id = new_subscription(billing, organization, payment_behavior="default_incomplete")
    billing.emulator.set_clock(START)
    billing.emulator.settle_subscription_payment(subscription_id)
    events = emitted(billing, subscription_id)
    created, updated = (
        events["customer.subscription.created"],
        events["customer.subscription.updated"],
    )
    assert created["data"]["object"]["status"] == "incomplete"
    assert updated["data"]["object"]["status"] == "active"
    assert created["created"] == updated["created"] == START

    # Delivered newest first, each applied by its own run.
    assert post_event(receiver_url, updated) == 200
    assert run_webhook_job(billing.instance, billing.resources()).success
    assert post_event(receiver_url, created) == 200
    assert run_webhook_job(billing.instance, billing.resources()).success

    row = subscription_row(billing.engine, subscription_id)
    item = billing.stripe_billing.client.v1.subscriptions.retrieve(subscription_id)["items"].data[0]
    assert row["status"] == "active"
    assert int(row["current_period_start"].timestamp()) == item.current_period_start
    assert int(row["current_period_end"].timestamp()) == item.current_period_end
    assert row["organization_id"] == organization


def test_a_tie_without_a_stripe_key_waits_instead_of_guessing(
    billing: Billing, receiver_url: str
) -> None:
    organization = create_organization(billing.engine)
    subscription_id = new_subscription(billing, organization, payment_behavior="default_incomplete")
    billing.emulator.set_clock(START)
    billing.emulator.settle_subscription_payment(subscription_id)
    events = emitted(billing, subscription_id)
    without_key = pipeline_resources(billing.database_url)

    post_event(receiver_url, events[UPDATED])
    run_webhook_job(billing.instance, without_key)
    post_event(receiver_url, events[CREATED])
    run_webhook_job(billing.instance, without_key)

    row = {r["event_id"]: r for r in inbox_rows(billing.engine)}
    waiting = row[events[CREATED]["id"]]
    assert (waiting["status"], waiting["attempts"]) == (InboxStatus.FAILED, 1)
    assert "ties with an applied event" in waiting["last_error"]
    assert subscription_row(billing.engine, subscription_id)["status"] == "active"
