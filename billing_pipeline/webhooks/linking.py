"""How an event finds its organization, and `checkout.session.completed`, which names it.

Stripe knows nothing of our organizations, so each Stripe subscription is linked to one, in this
order (the README's "Identification" section states the same rules with examples):

1. `checkout.session.completed` names it: `client_reference_id`, else `metadata.organization_id`.
2. A subscription or invoice event of a subscription not linked yet names it through the
   subscription's metadata (`subscription_data.metadata.organization_id` at checkout; for an
   invoice, `parent.subscription_details.metadata`).
3. Another subscription of the same Stripe customer names it, but only once the event has waited
   CHECKOUT_WAIT in the inbox: Stripe sends subscription and invoice events before
   `checkout.session.completed`, and a customer may subscribe a second organization through
   Checkout (`client_reference_id`). Linking such a subscription to the customer's first
   organization at once would bill the second organization's usage to nobody and leave its
   checkout to fail; waiting lets the checkout, which outranks the customer, link it first.
4. The application may have created a row for the organization before checkout (no Stripe ids
   yet): the first link claims that row instead of adding a second one.

Otherwise the event waits (HandlerError, retried with the inbox's backoff).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, RowMapping, text

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.webhooks.inbox import ClaimedEvent
from billing_pipeline.webhooks.payloads import HandlerError, data_object, id_of
from billing_pipeline.webhooks.retries import DEAD_LETTER_AFTER

# How long an event of a subscription that names no organization waits in the inbox for its
# checkout before the customer's other subscription links it. Checkout usually follows within
# seconds; the wait is as long as the retry policy allows: the last attempt before the dead
# letter comes DEAD_LETTER_AFTER after the first failure, which is after the event arrived, so
# that attempt always finds the wait over and links through the customer instead of dying.
CHECKOUT_WAIT = timedelta(minutes=20)
assert CHECKOUT_WAIT < DEAD_LETTER_AFTER


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
    """The linked row, locked: concurrent events about one subscription apply one at a time."""
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


def row_for(
    connection: Connection,
    event: ClaimedEvent,
    subscription_id: str,
    customer_id: str | None,
    metadata: object,
) -> RowMapping:
    """The locked row of a subscription, linking it first when the event names the organization.

    Without a link the organization comes from `metadata.organization_id` (set through
    `subscription_data.metadata` at checkout), or, once the event has waited CHECKOUT_WAIT for
    its checkout, from another subscription of the same customer. Otherwise this is an error: a
    later attempt retries it once `checkout.session.completed` has linked the subscription.
    """
    row = _find_row(connection, subscription_id)
    if row is not None:
        return row
    source = "metadata.organization_id"
    org_ref = metadata.get("organization_id") if isinstance(metadata, dict) else None
    if org_ref is None and customer_id is not None:
        customer_organization = connection.execute(
            text(
                """
                SELECT organization_id FROM subscriptions
                WHERE stripe_customer_id = :customer ORDER BY id LIMIT 1
                """
            ),
            {"customer": customer_id},
        ).scalar_one_or_none()
        if customer_organization is not None and not _waited_for_checkout(connection, event):
            raise HandlerError(
                f"subscription {subscription_id} names no organization and its customer "
                f"{customer_id} already has one: waiting up to {CHECKOUT_WAIT} for its "
                "checkout.session.completed before linking it through the customer"
            )
        source = f"another subscription of customer {customer_id}"
        org_ref = customer_organization
    if org_ref is None:
        raise HandlerError(
            f"subscription {subscription_id} is not linked to an organization yet "
            "(no checkout.session.completed applied and no metadata.organization_id)"
        )
    organization_id = _organization_id(org_ref, source)
    _require_organization(connection, organization_id, source)
    return _link(connection, organization_id, subscription_id, customer_id)


def _waited_for_checkout(connection: Connection, event: ClaimedEvent) -> bool:
    """Whether the event arrived here CHECKOUT_WAIT ago (the database's clock, the one the
    inbox's backoff is written with). Arrival, not Stripe's `created`: a recovered event is
    hours old and its checkout may be recovered in the same batch."""
    waited: bool = connection.execute(
        text("SELECT received_at <= now() - :wait FROM billing.webhook_inbox WHERE id = :id"),
        {"id": event.id, "wait": CHECKOUT_WAIT},
    ).scalar_one()
    return waited


def fill_facts(
    connection: Connection,
    row_id: int,
    customer_id: str | None,
    started_at: datetime | None = None,
    *,
    started_at_wins: bool = False,
) -> None:
    """Fill what never changes for a subscription, from any event however stale.

    The reporting flow bills an organization from its first paid day by looking its customer up
    here, so the customer is kept once known. `started_at` is the subscription's `start_date`
    (`started_at_wins`), or the checkout's time, which only fills an empty value.
    """
    connection.execute(
        text(
            """
            UPDATE subscriptions
            SET stripe_customer_id = COALESCE(stripe_customer_id, :customer),
                started_at = CASE WHEN :wins THEN COALESCE(:started, started_at)
                                  ELSE COALESCE(started_at, :started) END,
                updated_at = now()
            WHERE id = :id
            """
        ),
        {"id": row_id, "customer": customer_id, "started": started_at, "wins": started_at_wins},
    )


def apply_checkout_completed(
    connection: Connection, event: ClaimedEvent, stripe: StripeBilling | None
) -> InboxStatus:
    """Link the organization named by the session to its Stripe customer and subscription.

    A checkout in another mode (a one-off payment) has no subscription and is ignored.
    """
    session = data_object(event)
    if session.get("mode") != "subscription":
        return InboxStatus.IGNORED
    subscription_id = id_of(session.get("subscription"))
    if subscription_id is None:
        raise HandlerError(f"subscription checkout {session.get('id')} has no subscription")
    customer_id = id_of(session.get("customer"))
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
    fill_facts(connection, row["id"], customer_id, event.stripe_created)
    return InboxStatus.PROCESSED
