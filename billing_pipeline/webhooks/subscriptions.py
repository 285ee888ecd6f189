"""`customer.subscription.*`: a subscription's status, period, cancellation, prices.

Stripe delivers out of order and its `created` has one-second resolution, so the row remembers
the `created` of the newest event applied to its state (`state_event_created`):

- an older event changes nothing (its snapshot is stale);
- a newer event writes its snapshot;
- an event with the same `created` is ambiguous (a `deleted` and an `updated` of one second, or
  a `created` delivered after its `updated`): neither snapshot is trusted, and the state is read
  from Stripe (`GET /v1/subscriptions/{id}`) instead. Stripe never reactivates a canceled
  subscription, so a canceled one can only stay canceled.

Every snapshot, stale ones included, also adds a point to the subscription's status history
(`status_history.py`), which attribution reads per part of a day; the event that writes the
state also replaces the subscription's prices (`subscription_prices.py`).

Without a Stripe key a tie cannot be settled: the event waits and is retried (then dead-lettered,
visible in Dagster) rather than guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from billing_pipeline.db.schema import SUBSCRIPTION_STATUSES
from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.webhooks.billing_periods import record_period
from billing_pipeline.webhooks.inbox import ClaimedEvent
from billing_pipeline.webhooks.linking import fill_facts, row_for
from billing_pipeline.webhooks.payloads import HandlerError, data_object, id_of, timestamp
from billing_pipeline.webhooks.status_history import effective_from, record_status
from billing_pipeline.webhooks.subscription_prices import record_prices

SUBSCRIPTION_EVENT_TYPES = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    # A subscription entering or leaving `paused` (not a pause of payment collection).
    "customer.subscription.paused",
    "customer.subscription.resumed",
)


def _state(subscription: Mapping[str, Any], subscription_id: str) -> dict[str, Any]:
    """The columns a subscription object sets, from an event's snapshot or from Stripe.

    Since API version basil the period lives on the subscription items; older versions kept it on
    the subscription itself, which is the fallback. Only the first item's period is read: in
    Stripe's classic billing mode every item of a subscription shares one period.
    """
    status = subscription.get("status")
    if status not in SUBSCRIPTION_STATUSES:
        raise HandlerError(f"subscription {subscription_id} has unknown status {status!r}")
    items = subscription.get("items")
    item_list = items.get("data") if isinstance(items, Mapping) else None
    item = item_list[0] if isinstance(item_list, list) and item_list else {}
    if not isinstance(item, Mapping):
        raise HandlerError(f"subscription {subscription_id} has a malformed item")
    return {
        "status": status,
        "period_start": timestamp(
            item.get("current_period_start", subscription.get("current_period_start")),
            "current_period_start",
        ),
        "period_end": timestamp(
            item.get("current_period_end", subscription.get("current_period_end")),
            "current_period_end",
        ),
        "cancel_at_period_end": bool(subscription.get("cancel_at_period_end")),
        "cancel_at": timestamp(subscription.get("cancel_at"), "cancel_at"),
        "canceled_at": timestamp(subscription.get("canceled_at"), "canceled_at"),
        "ended_at": timestamp(subscription.get("ended_at"), "ended_at"),
    }


def _current_from_stripe(
    stripe: StripeBilling | None, subscription_id: str, event: ClaimedEvent
) -> Mapping[str, Any]:
    if stripe is None:
        raise HandlerError(
            f"event {event.event_id} ties with an applied event about subscription "
            f"{subscription_id} on `created`, and STRIPE_SECRET_KEY is not set (the Stripe "
            "resource has no key), so the current state cannot be read from Stripe"
        )
    current = stripe.retrieve_subscription(subscription_id)
    if id_of(current.get("id")) != subscription_id:
        raise HandlerError(f"Stripe answered another object for subscription {subscription_id}")
    return current


def _write_state(
    connection: Connection, row_id: int, state: dict[str, Any], created: datetime
) -> None:
    connection.execute(
        text(
            """
            UPDATE subscriptions
            SET status = :status,
                current_period_start = :period_start,
                current_period_end = :period_end,
                cancel_at_period_end = :cancel_at_period_end,
                cancel_at = :cancel_at,
                canceled_at = :canceled_at,
                ended_at = :ended_at,
                state_event_created = :created,
                updated_at = now()
            WHERE id = :id
            """
        ),
        {"id": row_id, "created": created, **state},
    )


def _record_history(
    connection: Connection,
    subscription: Mapping[str, Any],
    subscription_id: str,
    state: dict[str, Any],
    event: ClaimedEvent,
) -> None:
    status = state["status"]
    effective = effective_from(subscription, status, event.stripe_created)
    record_status(connection, subscription_id, status, effective, event.stripe_created)


def apply_subscription_change(
    connection: Connection, event: ClaimedEvent, stripe: StripeBilling | None
) -> InboxStatus:
    """Apply the event's snapshot if it is the newest; settle a tie with Stripe's current state.

    The row is locked (by `row_for`) before its `state_event_created` is compared, so two runs
    applying events of one subscription at once take turns.
    """
    subscription = data_object(event)
    subscription_id = id_of(subscription.get("id"))
    if subscription_id is None:
        raise HandlerError(f"event {event.event_id} carries a subscription without an id")
    state = _state(subscription, subscription_id)
    customer_id = id_of(subscription.get("customer"))
    row = row_for(connection, event, subscription_id, customer_id, subscription.get("metadata"))
    fill_facts(
        connection,
        row["id"],
        customer_id,
        timestamp(subscription.get("start_date"), "start_date"),
        started_at_wins=True,
    )
    applied: datetime | None = row["state_event_created"]
    if applied is not None and event.stripe_created < applied:
        # Stale for the current state, but still a true point of the status history.
        _record_history(connection, subscription, subscription_id, state, event)
        return InboxStatus.PROCESSED
    snapshot: Mapping[str, Any] = subscription
    if applied is not None and event.stripe_created == applied:
        snapshot = _current_from_stripe(stripe, subscription_id, event)
        state = _state(snapshot, subscription_id)
    _record_history(connection, snapshot, subscription_id, state, event)
    _write_state(connection, row["id"], state, event.stripe_created)
    record_prices(connection, subscription_id, snapshot, event.stripe_created)
    record_period(
        connection, subscription_id, customer_id, state["period_start"], state["period_end"]
    )
    return InboxStatus.PROCESSED
