"""Linking follows the documented precedence whatever order Stripe's events arrive in."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.webhooks.linking import CHECKOUT_WAIT
from billing_pipeline.webhooks.processing import DEAD_LETTER_AFTER, process_open_events
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.reporting import TODAY, days_before, run_days, stripe_view
from billing_pipeline_tests.support.stripe import new_customer
from billing_pipeline_tests.support.webhooks import (
    T0,
    checkout_completed,
    create_organization,
    end_backoffs,
    inbox_rows,
    invoice_event,
    post_event,
    store_events,
    subscription_event,
    subscription_row,
)
from stripe_emulator.server import StripeEmulator


def _arrived_ago(engine: Engine, seconds: float) -> None:
    """Move the inbox's arrival times back instead of sleeping."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE billing.webhook_inbox "
                "SET received_at = now() - make_interval(secs => :s), next_attempt_at = now()"
            ),
            {"s": seconds},
        )


def test_a_second_organization_checked_out_by_the_same_customer_waits_for_its_checkout(
    engine: Engine,
) -> None:
    first, second = create_organization(engine, "First"), create_organization(engine, "Second")
    store_events(engine, [checkout_completed(first, "cus_1", "sub_1", T0)])
    process_open_events(engine)
    # The second organization subscribes through Checkout with the same customer: Stripe sends
    # the subscription and its invoice before the checkout, which alone names the organization.
    early = [
        subscription_event("customer.subscription.created", "sub_2", "cus_1", T0 + 100),
        invoice_event("invoice.paid", "in_2", "sub_2", "cus_1", T0 + 101),
    ]
    store_events(engine, early)

    waiting = process_open_events(engine)
    store_events(engine, [checkout_completed(second, "cus_1", "sub_2", T0 + 102)])
    end_backoffs(engine)
    # Oldest first: the waiting events fail once more before the checkout links, then apply.
    process_open_events(engine)
    end_backoffs(engine)
    done = process_open_events(engine)

    assert sorted(waiting.failed) == sorted(e["id"] for e in early)
    assert sorted(done.processed) == sorted(e["id"] for e in early)
    assert {row["status"] for row in inbox_rows(engine)} == {InboxStatus.PROCESSED}
    row = subscription_row(engine, "sub_2")
    assert (row["organization_id"], row["stripe_customer_id"]) == (second, "cus_1")
    assert row["status"] == "active" and row["payment_status"] == "paid"
    assert subscription_row(engine, "sub_1")["organization_id"] == first


def test_without_a_checkout_the_customer_links_the_subscription_once_the_wait_is_over(
    engine: Engine,
) -> None:
    """A subscription created through the API for an existing customer never gets a checkout:
    after CHECKOUT_WAIT the customer's organization is used, before any dead letter."""
    assert CHECKOUT_WAIT < DEAD_LETTER_AFTER
    org = create_organization(engine)
    store_events(engine, [checkout_completed(org, "cus_1", "sub_1", T0)])
    process_open_events(engine)
    created = subscription_event("customer.subscription.created", "sub_2", "cus_1", T0 + 100)
    store_events(engine, [created])

    _arrived_ago(engine, CHECKOUT_WAIT.total_seconds() - 60)
    still_waiting = process_open_events(engine)
    _arrived_ago(engine, CHECKOUT_WAIT.total_seconds() + 1)
    linked = process_open_events(engine)

    assert still_waiting.failed == [created["id"]]
    assert linked.processed == [created["id"]]
    assert subscription_row(engine, "sub_2")["organization_id"] == org


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_the_second_organizations_usage_is_billed_to_the_customer_whatever_the_arrival_order(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    receiver_url: str,
    meter_kind: str,
    api: str,
) -> None:
    """End to end: signed events to the real receiver in Stripe's order, the processing job,
    then the real reporting run; Stripe holds both organizations' usage per day."""
    customer = new_customer(stripe_billing, "Two organizations")
    days = [days_before(n) for n in (3, 2, 1)]
    for organization in (1, 2):
        add_organization(engine, organization)
        add_sensor(engine, organization * 10, organization, midnight(days[0]) - timedelta(days=2))
        for n, day in enumerate(days):
            add_readings(engine, organization * 10, day, organization * 10 + n)
    started = int(midnight(days[0]).timestamp()) - 86400
    for organization, subscription in ((1, "sub_first"), (2, "sub_second")):
        created = started + organization * 60
        # Stripe's order: the subscription and its invoice, then the checkout naming the org.
        for payload in (
            subscription_event(
                "customer.subscription.created", subscription, customer, created, start_date=started
            ),
            invoice_event(
                "invoice.paid", f"in_{organization}", subscription, customer, created + 1
            ),
        ):
            assert post_event(receiver_url, payload) == 200
        process_open_events(engine)
        checkout = checkout_completed(organization, customer, subscription, created + 2)
        assert post_event(receiver_url, checkout) == 200
        for _ in range(3):
            end_backoffs(engine)
            process_open_events(engine)
    assert {row["status"] for row in inbox_rows(engine)} == {InboxStatus.PROCESSED}

    assert run_days(
        dagster_instance, database_url, emulator_server.url, days[0], days[-1], meter_event_api=api
    ).success

    with engine.connect() as connection:
        readings = connection.execute(
            text(
                "SELECT CAST(r.recorded_at AT TIME ZONE 'UTC' AS date) AS day, count(*) AS n "
                "FROM temperature_readings r JOIN sensors s ON s.id = r.sensor_id "
                "WHERE s.organization_id IN (1, 2) GROUP BY 1"
            )
        ).all()
        sensors = connection.execute(
            text("SELECT count(*) FROM sensors WHERE organization_id IN (1, 2)")
        ).scalar_one()
    expected = {("temperature_readings", customer, r.day): float(r.n) for r in readings}
    expected |= {("active_sensors", customer, day): float(sensors) for day in days}
    assert stripe_view(stripe_billing, [customer], days[0], TODAY) == expected
