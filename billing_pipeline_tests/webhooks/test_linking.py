"""Linking follows the documented precedence whatever order Stripe's events arrive in."""

from __future__ import annotations

from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.webhooks.linking import CHECKOUT_WAIT
from billing_pipeline.webhooks.processing import DEAD_LETTER_AFTER, process_open_events
from billing_pipeline_tests.support.webhooks import (
    T0,
    checkout_completed,
    create_organization,
    end_backoffs,
    inbox_rows,
    invoice_event,
    store_events,
    subscription_event,
    subscription_row,
)


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
