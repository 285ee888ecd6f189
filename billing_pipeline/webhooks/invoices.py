"""`invoice.paid` / `invoice.payment_failed`: the payment state of the invoice's subscription.

Like the subscription state, the payment state remembers the `created` of the newest invoice event
applied (`payment_event_created`) and an older event changes nothing. At a tie, a paid invoice
stays paid: Stripe never moves a paid invoice back to unpaid, so a same-second `payment_failed`
of that invoice (a failed attempt just before the successful one) is the older fact.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.webhooks.inbox import ClaimedEvent
from billing_pipeline.webhooks.invoice_records import record_invoice, subscription_details
from billing_pipeline.webhooks.linking import fill_facts, row_for
from billing_pipeline.webhooks.payloads import data_object, id_of

INVOICE_EVENT_TYPES = ("invoice.paid", "invoice.payment_failed")


def apply_invoice_outcome(
    connection: Connection, event: ClaimedEvent, stripe: StripeBilling | None
) -> InboxStatus:
    """Record whether the subscription's latest invoice is paid.

    The invoice itself is recorded first (`invoice_records.py`). An invoice outside any
    subscription changes no subscription and is ignored.
    """
    invoice = data_object(event)
    subscription_id = record_invoice(connection, event)
    if subscription_id is None:
        return InboxStatus.IGNORED
    customer_id = id_of(invoice.get("customer"))
    metadata = subscription_details(invoice).get("metadata")
    row = row_for(connection, event, subscription_id, customer_id, metadata)
    fill_facts(connection, row["id"], customer_id)
    connection.execute(
        text(
            """
            UPDATE subscriptions
            SET payment_status = :payment_status,
                latest_invoice_id = :invoice,
                payment_event_created = :created,
                updated_at = now()
            WHERE id = :id
              AND (payment_event_created IS NULL
                   OR payment_event_created < :created
                   OR (payment_event_created = :created
                       AND NOT (payment_status = 'paid' AND latest_invoice_id = :invoice)))
            """
        ),
        {
            "id": row["id"],
            "payment_status": "paid" if event.event_type == "invoice.paid" else "payment_failed",
            "invoice": id_of(invoice.get("id")),
            "created": event.stripe_created,
        },
    )
    return InboxStatus.PROCESSED
