"""`invoice.created` / `invoice.finalized` (and every invoice event): what each invoice billed.

The record keeps the newest snapshot by event `created` (a finalized invoice's lines never
change again, so an older snapshot is never needed). It is what the `usage_after_invoice`
check compares with the source; an `invoice.created` for a subscription also records the period
it closes, which triggers the report of that period's closing part.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, text

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.webhooks.billing_periods import record_period
from billing_pipeline.webhooks.inbox import ClaimedEvent
from billing_pipeline.webhooks.payloads import HandlerError, data_object, id_of, timestamp

INVOICE_RECORD_EVENT_TYPES = ("invoice.created", "invoice.finalized")


def subscription_details(invoice: dict[str, Any]) -> dict[str, Any]:
    """`parent.subscription_details` (API versions since basil), or {} when there is none."""
    parent = invoice.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    return details if isinstance(details, dict) else {}


def subscription_of(invoice: dict[str, Any]) -> str | None:
    """Since basil the subscription is at `parent.subscription_details.subscription`; older
    versions had `invoice.subscription`."""
    details = subscription_details(invoice)
    return id_of(details.get("subscription")) or id_of(invoice.get("subscription"))


def _lines(invoice: dict[str, Any], invoice_id: str) -> list[dict[str, Any]]:
    lines = invoice.get("lines")
    data = lines.get("data") if isinstance(lines, dict) else []
    if not isinstance(data, list):
        raise HandlerError(f"invoice {invoice_id} has malformed lines")
    recorded = []
    for line in data:
        if not isinstance(line, dict):
            raise HandlerError(f"invoice {invoice_id} has a malformed line")
        pricing = line.get("pricing")
        details = pricing.get("price_details") if isinstance(pricing, dict) else None
        price = id_of(details.get("price")) if isinstance(details, dict) else None
        period = line.get("period")
        period = period if isinstance(period, dict) else {}
        recorded.append(
            {
                "price": price or id_of(line.get("price")),
                "quantity": line.get("quantity"),
                "start": period.get("start"),
                "end": period.get("end"),
            }
        )
    return recorded


def record_invoice(connection: Connection, event: ClaimedEvent) -> str | None:
    """Store the event's invoice if it is the newest seen; returns its subscription id."""
    invoice = data_object(event)
    invoice_id = id_of(invoice.get("id"))
    status = invoice.get("status")
    if invoice_id is None or not isinstance(status, str):
        raise HandlerError(f"event {event.event_id} carries an invoice without id or status")
    subscription_id = subscription_of(invoice)
    transitions = invoice.get("status_transitions")
    finalized = transitions.get("finalized_at") if isinstance(transitions, dict) else None
    connection.execute(
        text(
            """
            INSERT INTO billing.invoices
                (id, stripe_customer_id, stripe_subscription_id, status, billing_reason, lines,
                 finalized_at, automatically_finalizes_at, event_created)
            VALUES (:id, :customer, :subscription, :status, :reason, CAST(:lines AS jsonb),
                    :finalized, :finalizes, :created)
            ON CONFLICT (id) DO UPDATE
            SET status = EXCLUDED.status, lines = EXCLUDED.lines,
                finalized_at = coalesce(EXCLUDED.finalized_at, invoices.finalized_at),
                automatically_finalizes_at = EXCLUDED.automatically_finalizes_at,
                event_created = EXCLUDED.event_created, updated_at = now()
            WHERE invoices.event_created <= EXCLUDED.event_created
            """
        ),
        {
            "id": invoice_id,
            "customer": id_of(invoice.get("customer")),
            "subscription": subscription_id,
            "status": status,
            "reason": invoice.get("billing_reason"),
            "lines": json.dumps(_lines(invoice, invoice_id)),
            "finalized": timestamp(finalized, "status_transitions.finalized_at"),
            # A draft's end of grace period: how long the draft sensor has to make it right.
            "finalizes": timestamp(
                invoice.get("automatically_finalizes_at"), "automatically_finalizes_at"
            ),
            "created": event.stripe_created,
        },
    )
    return subscription_id


def apply_invoice_record(
    connection: Connection, event: ClaimedEvent, stripe: StripeBilling | None
) -> InboxStatus:
    """Record the invoice, and for a subscription's invoice the period it closes."""
    subscription_id = record_invoice(connection, event)
    if subscription_id is None:
        return InboxStatus.PROCESSED
    invoice = data_object(event)
    if event.event_type == "invoice.created":
        record_period(
            connection,
            subscription_id,
            id_of(invoice.get("customer")),
            timestamp(invoice.get("period_start"), "period_start"),
            timestamp(invoice.get("period_end"), "period_end"),
        )
    return InboxStatus.PROCESSED
