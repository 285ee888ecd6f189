"""Recovering events the receiver missed, from Stripe's event list, with the Dagster job.

The receiver is a real HTTP server the emulator delivers to; it is stopped while the emulator
produces the rest of a subscription's lifecycle, so those deliveries fail, as they would at
Stripe. The recovery job must bring `subscriptions` to Stripe's state, applying each event once.
"""

from __future__ import annotations

import time
from typing import Any

import dagster as dg
from sqlalchemy import text

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.webhooks.app import create_app
from billing_pipeline.webhooks.recovery import OVERLAP
from billing_pipeline_tests.support.dagster_runs import Billing, webhook_definitions
from billing_pipeline_tests.support.invoicing import price_for_event
from billing_pipeline_tests.support.webhooks import (
    create_organization,
    inbox_rows,
    serve,
    subscription_row,
)
from stripe_emulator.server import StripeEmulator


def wait_for(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def recover(billing: Billing) -> dg.ExecuteInProcessResult:
    job = webhook_definitions(billing.resources()).resolve_job_def("recover_stripe_events")
    result = job.execute_in_process(instance=billing.instance)
    assert result.success
    return result


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [materialization] = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in materialization.metadata.items()}


def test_recovery_brings_subscriptions_to_stripes_state_after_the_receiver_was_down(
    billing: Billing, emulator_server: StripeEmulator
) -> None:
    stripe, control = billing.stripe_billing.client, billing.emulator
    organization = create_organization(billing.engine)
    customer = stripe.v1.customers.create({"name": "Acme Cold Chain"}).id
    with serve(create_app(billing.database_url, [emulator_server.webhook_secret])) as receiver:
        control.set_webhook_endpoint(f"{receiver}/webhooks/stripe")
        subscription = stripe.v1.subscriptions.create(
            {
                "customer": customer,
                "items": [{"price": price_for_event(stripe, "active_sensors")}],
                "metadata": {"organization_id": str(organization)},
                "payment_behavior": "default_incomplete",
            }
        )
        wait_for(lambda: len(inbox_rows(billing.engine)) == 1, "the created event")
    # The receiver is gone; Stripe goes on: the payment settles, the customer schedules a
    # cancellation, then cancels at once, each a minute apart.
    control.advance_clock(60)
    control.settle_subscription_payment(subscription.id)
    control.advance_clock(60)
    stripe.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    control.advance_clock(60)
    stripe.v1.subscriptions.cancel(subscription.id)
    wait_for(lambda: len(control.webhook_deliveries()) == 4, "the failed deliveries")
    undelivered = stripe.v1.events.list({"delivery_success": False}).data
    assert len(undelivered) == 3

    first = recover(billing)

    inbox = metadata(first, "stripe_webhook_inbox")
    assert (inbox["listed"], inbox["recovered"], inbox["refused"]) == (4, 3, 0)
    assert sorted(inbox["recovered_event_ids"]) == sorted(e.id for e in undelivered)
    applied = metadata(first, "stripe_subscriptions")
    # The delivered created event and the three recovered ones, each applied once.
    assert (applied["processed"], applied["failed"]) == (4, 0)
    rows = inbox_rows(billing.engine)
    assert len(rows) == 4 and {r["status"] for r in rows} == {InboxStatus.PROCESSED}
    current = stripe.v1.subscriptions.retrieve(subscription.id)
    row = subscription_row(billing.engine, subscription.id)
    item = current["items"].data[0]
    assert (row["organization_id"], row["stripe_customer_id"]) == (organization, customer)
    assert (row["status"], row["cancel_at_period_end"]) == (current.status, False)
    assert current.status == "canceled"
    assert int(row["canceled_at"].timestamp()) == current.canceled_at
    assert int(row["ended_at"].timestamp()) == current.ended_at
    assert int(row["current_period_start"].timestamp()) == item.current_period_start
    assert int(row["current_period_end"].timestamp()) == item.current_period_end
    assert int(row["started_at"].timestamp()) == current.start_date
    # The confirmed point is the newest event listed.
    with billing.engine.connect() as connection:
        point = connection.execute(
            text("SELECT confirmed_until FROM billing.webhook_recovery")
        ).scalar_one()
    assert int(point.timestamp()) == current.ended_at

    second = recover(billing)

    # Relisted from OVERLAP before the point (all four are within it): nothing is missing.
    again = metadata(second, "stripe_webhook_inbox")
    assert (again["listed"], again["recovered"]) == (4, 0)
    assert again["listed_since"] == (point - OVERLAP).isoformat()
    assert metadata(second, "stripe_subscriptions")["processed"] == 0
    assert len(inbox_rows(billing.engine)) == 4


def test_recovery_without_a_stripe_key_fails_the_run_and_says_why(billing: Billing) -> None:
    job = webhook_definitions(
        {"postgres": billing.postgres, "stripe": billing.stripe(secret_key=None)}
    )
    result = job.resolve_job_def("recover_stripe_events").execute_in_process(
        instance=billing.instance, raise_on_error=False
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "STRIPE_SECRET_KEY is not set" in str(failure.step_failure_data.error)
