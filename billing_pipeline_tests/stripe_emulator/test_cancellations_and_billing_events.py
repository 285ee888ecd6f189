"""Cancellations, the events billing produces and their delivery, and billing on the emulator's
own clock, through the official SDK over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stripe

from billing_pipeline_tests.support.invoicing import (
    CALENDAR_ANCHOR,
    UsageLog,
    advance_test_clock,
    metered_price,
    utc,
)
from billing_pipeline_tests.support.stripe import NOON, WebhookRecorder, make_client
from stripe_emulator import EmulatorControl, StripeEmulator

START = utc(2025, 7, 1)
HOUR = 3600


def readings_price(client: stripe.StripeClient, make_meter: Callable[..., Any]) -> Any:
    """3 minor units per reading of a `sum` meter."""
    return metered_price(client, make_meter("readings", "sum").id, "Readings")


def calendar_customer(
    client: stripe.StripeClient, price: Any, clock: str | None = None, **subscription: Any
) -> tuple[str, str, Any]:
    """(clock, customer, subscription) billed on the 1st, on a new test clock set to July 1st
    unless `clock` is given."""
    clock = clock or client.v1.test_helpers.test_clocks.create({"frozen_time": START}).id
    customer = client.v1.customers.create({"name": "Acme", "test_clock": clock}).id
    params: Any = {
        "customer": customer,
        "items": [{"price": price.id}],
        "billing_cycle_anchor_config": CALENDAR_ANCHOR,
        "metadata": {"organization_id": "7"},
        **subscription,
    }
    return clock, customer, client.v1.subscriptions.create(params)


def invoices(client: stripe.StripeClient, **filters: Any) -> list[Any]:
    params: Any = {"limit": 100, **filters}
    return list(client.v1.invoices.list(params).auto_paging_iter())


def test_a_mid_period_cancellation_ends_with_a_final_invoice_and_bills_nothing_after(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    clock, customer, subscription = calendar_customer(
        stripe_client, readings_price(stripe_client, make_meter)
    )
    usage = UsageLog("readings")
    cancel_at = utc(2025, 7, 15, 12)
    advance_test_clock(stripe_client, clock, utc(2025, 7, 10))
    scheduled = stripe_client.v1.subscriptions.update(subscription.id, {"cancel_at": cancel_at})
    assert (scheduled.cancel_at, scheduled.canceled_at) == (cancel_at, utc(2025, 7, 10))
    usage.send(stripe_client, customer, 40, utc(2025, 7, 2), utc(2025, 7, 10))
    advance_test_clock(stripe_client, clock, utc(2025, 7, 15, 11, 59, 30))
    usage.send(stripe_client, customer, 2, utc(2025, 7, 15, 11, 59), utc(2025, 7, 15, 11, 59, 30))
    advance_test_clock(stripe_client, clock, utc(2025, 7, 16))
    # Meters know nothing of subscriptions: usage after the end is accepted, never billed.
    usage.send(stripe_client, customer, 500, utc(2025, 7, 15, 12), utc(2025, 7, 16))
    usage.send(stripe_client, customer, 600, utc(2025, 7, 15, 23), utc(2025, 7, 16))
    advance_test_clock(stripe_client, clock, utc(2025, 8, 2))

    ended = stripe_client.v1.subscriptions.retrieve(subscription.id)
    assert (ended.status, ended.ended_at) == ("canceled", cancel_at)
    [final] = invoices(stripe_client, subscription=subscription.id)
    assert (final.period_start, final.period_end, final.status) == (START, cancel_at, "paid")
    assert final.billing_reason == "subscription_update"
    assert final.lines.data[0].quantity == usage.total(customer, START, cancel_at, cancel_at + HOUR)
    assert final.lines.data[0].quantity == 42
    assert ended.latest_invoice == final.id


def test_cancel_at_period_end_ends_at_the_period_end_and_bills_the_whole_period(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    clock, customer, subscription = calendar_customer(
        stripe_client, readings_price(stripe_client, make_meter)
    )
    stripe_client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    UsageLog("readings").send(stripe_client, customer, 9, utc(2025, 7, 1), START)
    advance_test_clock(stripe_client, clock, utc(2025, 8, 15))
    advance_test_clock(stripe_client, clock, utc(2025, 9, 15))  # nothing left to renew

    ended = stripe_client.v1.subscriptions.retrieve(subscription.id)
    assert (ended.status, ended.ended_at) == ("canceled", utc(2025, 8, 1))
    [final] = invoices(stripe_client, customer=customer)
    assert (final.period_end, final.billing_reason, final.total) == (
        utc(2025, 8, 1),
        "subscription_cycle",
        27,
    )


def test_an_immediate_cancel_bills_the_partial_period_only_with_invoice_now(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    price = readings_price(stripe_client, make_meter)
    clock, quiet_customer, quiet = calendar_customer(stripe_client, price)
    _, billed_customer, billed = calendar_customer(stripe_client, price, clock)
    usage = UsageLog("readings")
    for customer in (quiet_customer, billed_customer):
        usage.send(stripe_client, customer, 4, START, START)
    advance_test_clock(stripe_client, clock, utc(2025, 7, 3))

    stripe_client.v1.subscriptions.cancel(quiet.id)
    canceled = stripe_client.v1.subscriptions.cancel(billed.id, {"invoice_now": True})
    advance_test_clock(stripe_client, clock, utc(2025, 9, 1))

    assert invoices(stripe_client, customer=quiet_customer) == []
    [final] = invoices(stripe_client, customer=billed_customer)
    assert (final.period_start, final.period_end) == (START, utc(2025, 7, 3))
    assert (final.status, final.lines.data[0].quantity) == ("paid", 4)
    assert canceled.latest_invoice == final.id


def test_billing_events_come_in_stripes_order_and_are_delivered_signed(
    emulator_server: StripeEmulator,
    stripe_client: stripe.StripeClient,
    emulator_at_noon: EmulatorControl,
    make_meter: Callable[..., Any],
    webhook_recorder: WebhookRecorder,
) -> None:
    emulator_at_noon.set_webhook_endpoint(webhook_recorder.url)
    clock, customer, subscription = calendar_customer(
        stripe_client, readings_price(stripe_client, make_meter)
    )
    advance_test_clock(stripe_client, clock, utc(2025, 8, 1, 2))

    expected = [
        "test_helpers.test_clock.created",
        "customer.subscription.created",
        "test_helpers.test_clock.advancing",
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "test_helpers.test_clock.ready",
    ]
    listed = list(reversed(list(stripe_client.v1.events.list({"limit": 100}).data)))
    assert [event.type for event in listed] == expected
    received = webhook_recorder.wait(len(expected), timeout=10.0)
    delivered = [
        stripe.Webhook.construct_event(
            d.body.decode(), d.headers["Stripe-Signature"], emulator_server.webhook_secret
        )
        for d in received
    ]
    assert [event.id for event in delivered] == [event.id for event in listed]
    renewal, created, finalized, paid = (e.to_dict() for e in listed[3:7])
    invoice_id = created["data"]["object"]["id"]
    assert renewal["data"]["previous_attributes"]["latest_invoice"] is None
    assert renewal["data"]["object"]["latest_invoice"] == invoice_id
    assert renewal["data"]["object"]["items"]["data"][0]["current_period_start"] == utc(2025, 8, 1)
    assert [e["data"]["object"]["status"] for e in (created, finalized, paid)] == [
        "draft",
        "open",
        "paid",
    ]
    assert created["data"]["object"]["parent"]["subscription_details"] == {
        "metadata": {"organization_id": "7"},
        "subscription": subscription.id,
    }
    assert {e["request"]["id"] for e in (renewal, created, finalized, paid)} == {None}
    # Test-clock objects live at the clock's time; events are stamped with the emulator's
    # (pinned at 2025-06-15 noon, before the test clock's July).
    assert created["data"]["object"]["created"] == utc(2025, 8, 1)
    assert all(NOON <= e["created"] < START for e in (renewal, created, finalized, paid))
    assert json.loads(received[4].body)["data"]["object"]["customer"] == customer


def test_moving_the_emulator_clock_bills_customers_without_a_test_clock(
    stripe_client: stripe.StripeClient,
    emulator_at_noon: EmulatorControl,
    make_meter: Callable[..., Any],
) -> None:
    price = metered_price(stripe_client, make_meter("readings", "sum").id, "Readings")
    customer = stripe_client.v1.customers.create({"name": "Realtime"}).id
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": price.id}]}
    )
    item = subscription["items"].data[0]
    period_start, period_end = item.current_period_start, item.current_period_end
    usage = UsageLog("readings")
    usage.send(stripe_client, customer, 6, period_start, period_start)

    emulator_at_noon.set_clock(period_end + 30 * 60)
    [draft] = invoices(stripe_client, customer=customer)
    assert (draft.status, draft.period_end) == ("draft", period_end)
    usage.send(stripe_client, customer, 1, period_end - 1, period_end + 30 * 60)
    emulator_at_noon.advance_clock(2 * HOUR)
    usage.send(stripe_client, customer, 1000, period_end - 2, period_end + 150 * 60)

    [paid] = invoices(stripe_client, customer=customer)
    assert paid.status == "paid"
    assert paid.lines.data[0].quantity == usage.total(
        customer, period_start, period_end, period_end + HOUR
    )
    assert paid.lines.data[0].quantity == 7
    events = stripe_client.v1.events.list({"type": "invoice.*"}).data
    # Events keep the instants they happened at, though the clock jumped past them.
    assert [(e.type, e.created) for e in events] == [
        ("invoice.paid", period_end + HOUR),
        ("invoice.finalized", period_end + HOUR),
        ("invoice.created", period_end),
    ]


def test_a_state_file_keeps_prices_clocks_and_invoices_across_a_restart(tmp_path: Path) -> None:
    """The demo's emulator restarts between a period's end and its invoice's finalization."""
    state_file = tmp_path / "emulator.json"
    with StripeEmulator(port=0, state_file=state_file) as first:
        client = make_client(first.url)
        first.control.set_clock(NOON)
        meter = client.v1.billing.meters.create(
            {
                "display_name": "R",
                "event_name": "readings",
                "default_aggregation": {"formula": "sum"},
            }
        )
        clock, customer, subscription = calendar_customer(
            client, metered_price(client, meter.id, "Readings")
        )
        advance_test_clock(client, clock, utc(2025, 8, 1, 0, 30))
        UsageLog("readings").send(client, customer, 5, utc(2025, 7, 31), utc(2025, 8, 1, 0, 30))
    with StripeEmulator(port=0, state_file=state_file) as second:
        client = make_client(second.url)
        [draft] = invoices(client, customer=customer)
        assert draft.status == "draft"
        advance_test_clock(client, clock, utc(2025, 8, 1, 2))
        [paid] = invoices(client, subscription=subscription.id)
        assert (paid.status, paid.lines.data[0].quantity, paid.total) == ("paid", 5, 15)
