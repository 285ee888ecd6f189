"""Stripe's thin meter-error events, as the webhook flow handles them.

A thin event carries only an id and a type, so its body is fetched from Stripe with the Stripe
resource's client; what it means for billing lives in `stripe_reporting.meter_errors`. Without a
client the handler raises HandlerError: the event stays in the inbox, is retried, and is
dead-lettered (visible in Dagster) rather than dropped.
"""

from __future__ import annotations

from sqlalchemy import Connection

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.meter_errors import (
    ERROR_REPORT_EVENT_TYPES,
    MalformedErrorReportError,
    apply_error_report,
)
from billing_pipeline.webhooks.inbox import ClaimedEvent
from billing_pipeline.webhooks.payloads import HandlerError

__all__ = ["ERROR_REPORT_EVENT_TYPES", "apply_thin_event"]


def apply_thin_event(
    connection: Connection, event: ClaimedEvent, stripe: StripeBilling | None
) -> InboxStatus:
    """Mark the ledger rows a meter error report names as rejected, in the caller's transaction."""
    if stripe is None:
        raise HandlerError(
            f"event {event.event_id} is a thin event and STRIPE_SECRET_KEY is not set (the Stripe "
            "resource has no key), so its body cannot be fetched from Stripe"
        )
    try:
        marked = apply_error_report(
            connection, event.event_id, stripe.retrieve_event(event.event_id)
        )
    except MalformedErrorReportError as error:
        raise HandlerError(f"event {event.event_id}: {error}") from error
    return InboxStatus.PROCESSED if marked else InboxStatus.IGNORED
