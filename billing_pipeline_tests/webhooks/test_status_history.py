"""The status history: every snapshot adds when its status took effect, whatever the order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text

from billing_pipeline.webhooks.processing import process_open_events
from billing_pipeline_tests.support.webhooks import (
    T0,
    create_organization,
    store_events,
    subscription_event,
    subscription_row,
)

DAY = 86400


def _history(engine: Engine) -> list[tuple[datetime, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT effective_from, status FROM billing.subscription_status_history "
                "WHERE stripe_subscription_id = 'sub_1' ORDER BY effective_from"
            )
        )
        return [(row.effective_from, row.status) for row in rows]


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def test_a_trial_paused_and_resumed_keeps_each_status_from_its_own_instant_in_any_order(
    engine: Engine,
) -> None:
    org = create_organization(engine)
    life: dict[str, Any] = {
        "metadata": {"organization_id": str(org)},
        "trial_start": T0,
        "trial_end": T0 + 2 * DAY,
    }
    events = [
        subscription_event(
            "customer.subscription.created", "sub_1", "cus_1", T0 + 5, status="trialing", **life
        ),
        # Stripe pauses the trial at its end; the event comes a minute later.
        subscription_event(
            "customer.subscription.updated",
            "sub_1",
            "cus_1",
            T0 + 2 * DAY + 60,
            status="paused",
            **life,
        ),
        subscription_event(
            "customer.subscription.updated", "sub_1", "cus_1", T0 + 4 * DAY, status="active", **life
        ),
    ]
    # Newest first: the older snapshots are stale for the row, yet each is a true past status.
    store_events(engine, [events[2]])
    process_open_events(engine)
    store_events(engine, [events[1], events[0]])
    process_open_events(engine)

    assert _history(engine) == [
        (_at(T0), "trialing"),
        (_at(T0 + 2 * DAY), "paused"),
        (_at(T0 + 4 * DAY), "active"),
    ]
    assert subscription_row(engine, "sub_1")["status"] == "active"
