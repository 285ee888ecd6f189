"""Which event types the webhook flow handles, and the one place that dispatches them.

Every other type is stored and closed as `ignored`, so a new type Stripe starts sending (or one
selected on the endpoint by mistake) is visible in the inbox and never an error. The README's
"Handled event types" table lists exactly `HANDLERS` (a test compares them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy import Connection

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.webhooks.inbox import ClaimedEvent
from billing_pipeline.webhooks.invoice_records import (
    INVOICE_RECORD_EVENT_TYPES,
    apply_invoice_record,
)
from billing_pipeline.webhooks.invoices import INVOICE_EVENT_TYPES, apply_invoice_outcome
from billing_pipeline.webhooks.linking import apply_checkout_completed
from billing_pipeline.webhooks.subscriptions import (
    SUBSCRIPTION_EVENT_TYPES,
    apply_subscription_change,
)
from billing_pipeline.webhooks.thin_events import ERROR_REPORT_EVENT_TYPES, apply_thin_event

Handler = Callable[[Connection, ClaimedEvent, StripeBilling | None], InboxStatus]

HANDLERS: Mapping[str, Handler] = {
    "checkout.session.completed": apply_checkout_completed,
    **dict.fromkeys(SUBSCRIPTION_EVENT_TYPES, apply_subscription_change),
    **dict.fromkeys(INVOICE_RECORD_EVENT_TYPES, apply_invoice_record),
    **dict.fromkeys(INVOICE_EVENT_TYPES, apply_invoice_outcome),
    **dict.fromkeys(ERROR_REPORT_EVENT_TYPES, apply_thin_event),
}

# Snapshot (v1) types: the ones Stripe's event list (`GET /v1/events`) can return. Thin events
# are v2 and come only from their event destination.
SNAPSHOT_EVENT_TYPES = tuple(t for t in HANDLERS if t not in ERROR_REPORT_EVENT_TYPES)


def apply_event(
    connection: Connection, event: ClaimedEvent, stripe: StripeBilling | None
) -> InboxStatus:
    """Apply the event in the caller's transaction; `processed`, or `ignored` for other types.

    `stripe` reads from Stripe what an event does not carry (a thin event's body, a subscription's
    current state at a tie); None when the Stripe resource has no key.
    """
    handler = HANDLERS.get(event.event_type)
    return InboxStatus.IGNORED if handler is None else handler(connection, event, stripe)
