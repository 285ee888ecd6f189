"""Applying the inbox to `subscriptions`: order, idempotence, retries and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.webhooks.processing import (
    DEAD_LETTER_AFTER,
    MAX_ATTEMPTS,
    process_open_events,
    retry_delay,
)
from billing_pipeline_tests.support.webhooks import (
    T0,
    backoff_left,
    checkout_completed,
    create_organization,
    end_backoffs,
    event,
    inbox_rows,
    invoice_event,
    store_events,
    subscription_event,
    subscription_row,
)


def at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def statuses(engine: Engine) -> dict[str, str]:
    return {row["event_id"]: row["status"] for row in inbox_rows(engine)}


def test_checkout_links_organization_customer_and_start(engine: Engine) -> None:
    org = create_organization(engine)
    checkout = checkout_completed(org, "cus_1", "sub_1", T0 + 5)
    store_events(engine, [checkout])

    result = process_open_events(engine)

    assert result.processed == [checkout["id"]]
    row = subscription_row(engine, "sub_1")
    assert row["organization_id"] == org
    assert row["stripe_customer_id"] == "cus_1"
    assert row["started_at"] == at(T0 + 5)
    assert statuses(engine) == {checkout["id"]: "processed"}


def test_checkout_falls_back_to_metadata_and_claims_the_apps_unlinked_row(engine: Engine) -> None:
    org = create_organization(engine)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO subscriptions (organization_id) VALUES (:org)"), {"org": org}
        )
    checkout = checkout_completed(
        None, "cus_1", "sub_1", T0, metadata={"organization_id": str(org)}
    )
    store_events(engine, [checkout])

    process_open_events(engine)

    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT organization_id, stripe_subscription_id FROM subscriptions")
        ).all()
    assert [tuple(row) for row in rows] == [(org, "sub_1")]


def test_full_signup_delivered_in_reverse_ends_in_the_newest_state(engine: Engine) -> None:
    """Stripe's order for a checkout is subscription.created, invoice.paid, session.completed,
    subscription.updated; delivered newest first, two runs still end in the newest state."""
    org = create_organization(engine)
    start = T0
    events = [
        subscription_event(
            "customer.subscription.created", "sub_1", "cus_1", start, status="incomplete"
        ),
        invoice_event("invoice.payment_failed", "in_0", "sub_1", "cus_1", start + 1),
        invoice_event("invoice.paid", "in_1", "sub_1", "cus_1", start + 2),
        checkout_completed(org, "cus_1", "sub_1", start + 3),
        subscription_event(
            "customer.subscription.updated",
            "sub_1",
            "cus_1",
            start + 4,
            status="active",
            cancel_at_period_end=True,
            cancel_at=start + 31 * 86400,
        ),
    ]
    store_events(engine, list(reversed(events)))

    first = process_open_events(engine)
    end_backoffs(engine)
    second = process_open_events(engine)

    # The subscription and invoice events older than the checkout could not be linked in the
    # first run (no organization yet); their retry applies them without undoing newer state.
    assert set(first.failed) == {events[0]["id"], events[1]["id"], events[2]["id"]}
    assert set(second.processed) == set(first.failed)
    assert set(statuses(engine).values()) == {"processed"}
    row = subscription_row(engine, "sub_1")
    assert row["status"] == "active"
    assert row["cancel_at_period_end"] is True
    assert row["cancel_at"] == at(start + 31 * 86400)
    assert row["current_period_start"] == at(T0)
    assert row["current_period_end"] == at(T0 + 31 * 86400)
    assert row["payment_status"] == "paid"
    assert row["latest_invoice_id"] == "in_1"
    assert row["started_at"] == at(start)
    assert row["state_event_created"] == at(start + 4)
    assert row["payment_event_created"] == at(start + 2)


def test_older_event_never_overwrites_newer_state(engine: Engine) -> None:
    org = create_organization(engine)
    store_events(
        engine,
        [
            checkout_completed(org, "cus_1", "sub_1", T0),
            subscription_event(
                "customer.subscription.deleted",
                "sub_1",
                "cus_1",
                T0 + 100,
                status="canceled",
                canceled_at=T0 + 100,
                ended_at=T0 + 100,
            ),
            invoice_event("invoice.payment_failed", "in_2", "sub_1", "cus_1", T0 + 100),
        ],
    )
    process_open_events(engine)
    late = [
        subscription_event(
            "customer.subscription.updated", "sub_1", "cus_1", T0 + 50, status="past_due"
        ),
        invoice_event("invoice.paid", "in_1", "sub_1", "cus_1", T0 + 50),
    ]
    store_events(engine, late)

    result = process_open_events(engine)

    # The late events are closed as processed but change nothing.
    assert sorted(result.processed) == sorted(e["id"] for e in late)
    row = subscription_row(engine, "sub_1")
    assert (row["status"], row["ended_at"]) == ("canceled", at(T0 + 100))
    assert (row["payment_status"], row["latest_invoice_id"]) == ("payment_failed", "in_2")


def test_subscription_start_date_sets_started_at_and_metadata_links(engine: Engine) -> None:
    org = create_organization(engine)
    created = subscription_event(
        "customer.subscription.created",
        "sub_1",
        "cus_1",
        T0 + 9,
        start_date=T0 - 86400,
        metadata={"organization_id": str(org)},
    )
    store_events(engine, [created, checkout_completed(org, "cus_1", "sub_1", T0 + 10)])

    result = process_open_events(engine)

    assert len(result.processed) == 2
    row = subscription_row(engine, "sub_1")
    # Backdated start_date wins over the checkout's time: billing starts on the first paid day.
    assert row["started_at"] == at(T0 - 86400)
    assert row["stripe_customer_id"] == "cus_1"


def test_processed_event_returns_early_and_unknown_types_are_ignored(engine: Engine) -> None:
    org = create_organization(engine)
    checkout = checkout_completed(org, "cus_1", "sub_1", T0)
    unknown = event("customer.tax_id.created", {"id": "txi_1", "object": "tax_id"}, T0)
    payment_checkout = checkout_completed(org, "cus_1", None, T0, mode="payment")  # type: ignore[arg-type]
    store_events(engine, [checkout, unknown, payment_checkout])

    first = process_open_events(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE subscriptions SET stripe_customer_id = 'cus_changed'"))
    second = process_open_events(engine)

    assert first.processed == [checkout["id"]]
    assert sorted(first.ignored) == sorted([unknown["id"], payment_checkout["id"]])
    # Nothing is open any more: the second run touches nothing, not even the edited row.
    assert (second.processed, second.ignored, second.failed) == ([], [], [])
    assert subscription_row(engine, "sub_1")["stripe_customer_id"] == "cus_changed"


def test_a_poison_event_waits_out_each_backoff_however_often_it_is_run_then_dead_letters(
    engine: Engine,
) -> None:
    """Runs launched by hand in quick succession do not use up attempts: each failure is
    retried only after its backoff, and the dead letter comes after the documented span."""
    org = create_organization(engine)
    poison = checkout_completed(987654, "cus_x", "sub_x", T0)
    good = checkout_completed(org, "cus_1", "sub_1", T0 + 1)
    store_events(engine, [poison, good])

    first = process_open_events(engine)

    # The batch goes on around the poison event; the good one is applied in the first run.
    assert (first.processed, first.failed) == ([good["id"]], [poison["id"]])
    waited = timedelta()
    for attempt in range(1, MAX_ATTEMPTS):
        [row] = [r for r in inbox_rows(engine) if r["event_id"] == poison["id"]]
        assert (row["status"], row["attempts"]) == (InboxStatus.FAILED, attempt)
        left = backoff_left(engine, poison["id"])
        assert retry_delay(attempt) - timedelta(seconds=5) < left <= retry_delay(attempt)
        waited += retry_delay(attempt)
        # An operator running the job again and again before the backoff is over changes nothing.
        for _ in range(3):
            early = process_open_events(engine)
            assert (early.processed, early.failed, early.dead_lettered) == ([], [], [])
        assert end_backoffs(engine) == 1
        retried = process_open_events(engine)
        last = attempt + 1 == MAX_ATTEMPTS
        assert retried.failed == ([] if last else [poison["id"]])
        assert retried.dead_lettered == ([poison["id"]] if last else [])

    # Six attempts over 23 min 15 s of backoff (45 s doubling), as the README promises.
    assert waited == DEAD_LETTER_AFTER == timedelta(minutes=23, seconds=15)
    [row] = [r for r in inbox_rows(engine) if r["event_id"] == poison["id"]]
    assert (row["status"], row["attempts"]) == (InboxStatus.DEAD_LETTER, MAX_ATTEMPTS)
    assert "organization 987654 (from client_reference_id) does not exist" in row["last_error"]
    # A dead letter is not retried by later runs, and wrote nothing to subscriptions.
    end_backoffs(engine)
    assert process_open_events(engine).dead_lettered == []
    with engine.connect() as connection:
        subs = (
            connection.execute(text("SELECT stripe_subscription_id FROM subscriptions"))
            .scalars()
            .all()
        )
    assert subs == ["sub_1"]


def test_malformed_payload_is_a_handler_error_not_a_crash(engine: Engine) -> None:
    org = create_organization(engine)
    # start_date is written before ended_at is read, so the failure comes after a partial write.
    broken = subscription_event(
        "customer.subscription.updated",
        "sub_1",
        "cus_1",
        T0 + 1,
        start_date=T0 - 500,
        ended_at="soon",  # type: ignore[arg-type]
    )
    store_events(engine, [checkout_completed(org, "cus_1", "sub_1", T0), broken])

    result = process_open_events(engine)

    assert result.failed == [broken["id"]]
    [row] = [r for r in inbox_rows(engine) if r["event_id"] == broken["id"]]
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "`ended_at` is not a Unix timestamp" in row["last_error"]
    # The savepoint rolled the partial write back: the row keeps exactly the checkout's state.
    subscription = subscription_row(engine, "sub_1")
    assert (subscription["status"], subscription["started_at"]) == ("incomplete", at(T0))
