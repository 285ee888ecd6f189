"""Apply one inbox event to the `subscriptions` table, one handler per event type.

Stripe delivers out of order, so each part of a row carries the `created` of the newest event
applied to it (`state_event_created` for status/period/cancellation, `payment_event_created` for
the payment state): an older event never overwrites newer state. Facts that never change for a
subscription (its customer, its `start_date`) are filled from any event, stale or not, because the
reporting code bills an organization from its first paid day by looking its customer up here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, text

from billing_pipeline.db.schema import SUBSCRIPTION_STATUSES
from billing_pipeline.webhooks.inbox import ClaimedEvent

PROCESSED = "processed"
IGNORED = "ignored"


class HandlerError(Exception):
    """The event cannot be applied as it stands: recorded, retried, then dead-lettered."""


def _data_object(event: ClaimedEvent) -> dict[str, Any]:
    data = event.payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise HandlerError(f"event {event.event_id} has no data.object")
    return obj


def _id_of(value: object) -> str | None:
    """A Stripe reference: an id string, or an expanded object carrying one."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _timestamp(value: object, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise HandlerError(f"`{field}` is not a Unix timestamp")
    return datetime.fromtimestamp(value, tz=UTC)


def _organization_id(value: object, source: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise HandlerError(f"{source} {value!r} is not an organization id")


def _require_organization(connection: Connection, organization_id: int, source: str) -> None:
    exists = connection.execute(
        text("SELECT 1 FROM organizations WHERE id = :id"), {"id": organization_id}
    ).scalar_one_or_none()
    if exists is None:
        raise HandlerError(f"organization {organization_id} (from {source}) does not exist")


def _find_row(connection: Connection, subscription_id: str) -> RowMapping | None:
    return (
        connection.execute(
            text("SELECT * FROM subscriptions WHERE stripe_subscription_id = :sub FOR UPDATE"),
            {"sub": subscription_id},
        )
        .mappings()
        .one_or_none()
    )


def _link(
    connection: Connection, organization_id: int, subscription_id: str, customer_id: str | None
) -> RowMapping:
    """Attach the Stripe subscription to the organization.

    The application may already hold a row for the organization that is not yet linked to Stripe
    (created when checkout started); that row is claimed rather than duplicated.
    """
    params = {"org": organization_id, "sub": subscription_id, "customer": customer_id}
    placeholder = connection.execute(
        text(
            """
            SELECT id FROM subscriptions
            WHERE organization_id = :org AND stripe_subscription_id IS NULL
            ORDER BY id LIMIT 1 FOR UPDATE
            """
        ),
        params,
    ).scalar_one_or_none()
    if placeholder is not None:
        statement = text(
            """
            UPDATE subscriptions
            SET stripe_subscription_id = :sub,
                stripe_customer_id = COALESCE(:customer, stripe_customer_id),
                updated_at = now()
            WHERE id = :id RETURNING *
            """
        )
        params["id"] = placeholder
    else:
        statement = text(
            """
            INSERT INTO subscriptions (organization_id, stripe_subscription_id, stripe_customer_id)
            VALUES (:org, :sub, :customer) RETURNING *
            """
        )
    return connection.execute(statement, params).mappings().one()


def _row_for(
    connection: Connection,
    subscription_id: str,
    customer_id: str | None,
    metadata: object,
) -> RowMapping:
    """The row of a subscription, linking it first when the event itself names the organization.

    Without a link the organization comes from `metadata.organization_id` (set through
    `subscription_data.metadata` at checkout) or from another subscription of the same customer.
    Otherwise this is an error: a later run retries it once `checkout.session.completed`, usually
    only seconds newer, has linked the subscription.
    """
    row = _find_row(connection, subscription_id)
    if row is not None:
        return row
    source = "metadata.organization_id"
    org_ref = metadata.get("organization_id") if isinstance(metadata, dict) else None
    if org_ref is None and customer_id is not None:
        source = f"another subscription of customer {customer_id}"
        org_ref = connection.execute(
            text(
                """
                SELECT organization_id FROM subscriptions
                WHERE stripe_customer_id = :customer ORDER BY id LIMIT 1
                """
            ),
            {"customer": customer_id},
        ).scalar_one_or_none()
    if org_ref is None:
        raise HandlerError(
            f"subscription {subscription_id} is not linked to an organization yet "
            "(no checkout.session.completed applied and no metadata.organization_id)"
        )
    organization_id = _organization_id(org_ref, source)
    _require_organization(connection, organization_id, source)
    return _link(connection, organization_id, subscription_id, customer_id)


def apply_checkout_completed(connection: Connection, event: ClaimedEvent) -> str:
    """Link the organization named by the session to its Stripe customer and subscription."""
    session = _data_object(event)
    if session.get("mode") != "subscription":
        return IGNORED
    subscription_id = _id_of(session.get("subscription"))
    if subscription_id is None:
        raise HandlerError(f"subscription checkout {session.get('id')} has no subscription")
    customer_id = _id_of(session.get("customer"))
    metadata = session.get("metadata")
    if session.get("client_reference_id"):
        source, org_ref = "client_reference_id", session["client_reference_id"]
    elif isinstance(metadata, dict) and metadata.get("organization_id"):
        source, org_ref = "metadata.organization_id", metadata["organization_id"]
    else:
        raise HandlerError(
            f"checkout session {session.get('id')} has neither client_reference_id "
            "nor metadata.organization_id"
        )
    organization_id = _organization_id(org_ref, source)
    _require_organization(connection, organization_id, source)
    row = _find_row(connection, subscription_id)
    if row is None:
        row = _link(connection, organization_id, subscription_id, customer_id)
    elif row["organization_id"] != organization_id:
        raise HandlerError(
            f"subscription {subscription_id} belongs to organization {row['organization_id']}, "
            f"but checkout session {session.get('id')} names organization {organization_id}"
        )
    connection.execute(
        text(
            """
            UPDATE subscriptions
            SET stripe_customer_id = COALESCE(stripe_customer_id, :customer),
                started_at = COALESCE(started_at, :created),
                updated_at = now()
            WHERE id = :id
            """
        ),
        {"id": row["id"], "customer": customer_id, "created": event.stripe_created},
    )
    return PROCESSED


def apply_subscription_change(connection: Connection, event: ClaimedEvent) -> str:
    """Status, cancellation and billing period from `customer.subscription.*`.

    Since API version basil the period lives on the subscription items; older versions kept it on
    the subscription itself, which is the fallback.
    """
    subscription = _data_object(event)
    subscription_id = _id_of(subscription.get("id"))
    if subscription_id is None:
        raise HandlerError(f"event {event.event_id} carries a subscription without an id")
    status = subscription.get("status")
    if status not in SUBSCRIPTION_STATUSES:
        raise HandlerError(f"subscription {subscription_id} has unknown status {status!r}")
    items = subscription.get("items")
    item_list = items.get("data") if isinstance(items, dict) else None
    item = item_list[0] if isinstance(item_list, list) and item_list else {}
    if not isinstance(item, dict):
        raise HandlerError(f"subscription {subscription_id} has a malformed item")
    customer_id = _id_of(subscription.get("customer"))
    row = _row_for(connection, subscription_id, customer_id, subscription.get("metadata"))
    connection.execute(
        text(
            """
            UPDATE subscriptions
            SET stripe_customer_id = COALESCE(stripe_customer_id, :customer),
                started_at = COALESCE(:start_date, started_at),
                updated_at = now()
            WHERE id = :id
            """
        ),
        {
            "id": row["id"],
            "customer": customer_id,
            "start_date": _timestamp(subscription.get("start_date"), "start_date"),
        },
    )
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
              AND (state_event_created IS NULL OR state_event_created <= :created)
            """
        ),
        {
            "id": row["id"],
            "status": status,
            "period_start": _timestamp(
                item.get("current_period_start", subscription.get("current_period_start")),
                "current_period_start",
            ),
            "period_end": _timestamp(
                item.get("current_period_end", subscription.get("current_period_end")),
                "current_period_end",
            ),
            "cancel_at_period_end": bool(subscription.get("cancel_at_period_end")),
            "cancel_at": _timestamp(subscription.get("cancel_at"), "cancel_at"),
            "canceled_at": _timestamp(subscription.get("canceled_at"), "canceled_at"),
            "ended_at": _timestamp(subscription.get("ended_at"), "ended_at"),
            "created": event.stripe_created,
        },
    )
    return PROCESSED


def apply_invoice_outcome(connection: Connection, event: ClaimedEvent) -> str:
    """The subscription's payment state from `invoice.paid` / `invoice.payment_failed`.

    Since basil the subscription is at `parent.subscription_details.subscription`; older versions
    had `invoice.subscription`. An invoice outside any subscription is ignored.
    """
    invoice = _data_object(event)
    parent = invoice.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    details = details if isinstance(details, dict) else {}
    subscription_id = _id_of(details.get("subscription")) or _id_of(invoice.get("subscription"))
    if subscription_id is None:
        return IGNORED
    customer_id = _id_of(invoice.get("customer"))
    row = _row_for(connection, subscription_id, customer_id, details.get("metadata"))
    connection.execute(
        text(
            """
            UPDATE subscriptions
            SET stripe_customer_id = COALESCE(stripe_customer_id, :customer), updated_at = now()
            WHERE id = :id
            """
        ),
        {"id": row["id"], "customer": customer_id},
    )
    connection.execute(
        text(
            """
            UPDATE subscriptions
            SET payment_status = :payment_status,
                latest_invoice_id = :invoice,
                payment_event_created = :created,
                updated_at = now()
            WHERE id = :id
              AND (payment_event_created IS NULL OR payment_event_created <= :created)
            """
        ),
        {
            "id": row["id"],
            "payment_status": "paid" if event.event_type == "invoice.paid" else "payment_failed",
            "invoice": _id_of(invoice.get("id")),
            "created": event.stripe_created,
        },
    )
    return PROCESSED


HANDLERS: Mapping[str, Callable[[Connection, ClaimedEvent], str]] = {
    "checkout.session.completed": apply_checkout_completed,
    "customer.subscription.created": apply_subscription_change,
    "customer.subscription.updated": apply_subscription_change,
    "customer.subscription.deleted": apply_subscription_change,
    "invoice.paid": apply_invoice_outcome,
    "invoice.payment_failed": apply_invoice_outcome,
}


def apply_event(connection: Connection, event: ClaimedEvent) -> str:
    """Apply the event in the caller's transaction; return `processed` or `ignored`."""
    handler = HANDLERS.get(event.event_type)
    return IGNORED if handler is None else handler(connection, event)
