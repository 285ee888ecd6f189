"""Process the open inbox: oldest first, one transaction per event, bounded retries.

Each event is claimed, applied and closed in one transaction, so a crash leaves it open for the
next run and never half-applied. A handler error is recorded with the attempt count instead of
failing the batch; after MAX_ATTEMPTS the event is dead-lettered, where the asset check shows it.
Database outages are not the event's fault: they fail the run and cost no attempt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from billing_pipeline.webhooks import inbox
from billing_pipeline.webhooks.subscriptions import HandlerError, apply_event
from billing_pipeline.webhooks.thin_events import (
    ERROR_REPORT_EVENT_TYPES,
    EventFetcher,
    apply_thin_event,
)

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5


@dataclass
class BatchResult:
    """What one run did, for the materialization's metadata."""

    processed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    skipped: int = 0


def process_event(
    engine: Engine,
    row_id: int,
    max_attempts: int = MAX_ATTEMPTS,
    fetch_event: EventFetcher | None = None,
) -> tuple[str, str]:
    """Apply one inbox row; return (its new status, its event id), or ("skipped", "") if the row
    is already closed or another run holds it.

    Thin meter-error events need `fetch_event` (their body lives at Stripe); snapshot events
    carry their body and never call Stripe.
    """
    with engine.begin() as connection:
        event = inbox.claim(connection, row_id)
        if event is None:
            return "skipped", ""
        try:
            # A savepoint, so a handler that fails halfway leaves none of its writes behind while
            # the error itself is still recorded in the outer transaction.
            with connection.begin_nested():
                if event.event_type in ERROR_REPORT_EVENT_TYPES:
                    status = apply_thin_event(connection, event, fetch_event)
                else:
                    status = apply_event(connection, event)
        except (OperationalError, InterfaceError):
            raise
        except Exception as error:
            attempts = event.attempts + 1
            status = "dead_letter" if attempts >= max_attempts else "failed"
            inbox.mark_failed(
                connection, row_id, attempts, f"{type(error).__name__}: {error}", status
            )
            # HandlerError messages name ids only; other errors may quote payload values.
            reason = str(error) if isinstance(error, HandlerError) else type(error).__name__
            logger.warning(
                "stripe event %s (%s) %s after attempt %d: %s",
                event.event_id,
                event.event_type,
                status,
                attempts,
                reason,
            )
            return status, event.event_id
        inbox.mark_done(connection, row_id, status)
        return status, event.event_id


def process_open_events(
    engine: Engine, max_attempts: int = MAX_ATTEMPTS, fetch_event: EventFetcher | None = None
) -> BatchResult:
    """Apply every open event (pending, or failed and due for another attempt), oldest first."""
    result = BatchResult()
    buckets = {
        "processed": result.processed,
        "ignored": result.ignored,
        "failed": result.failed,
        "dead_letter": result.dead_lettered,
    }
    for row_id in inbox.open_event_ids(engine):
        status, event_id = process_event(engine, row_id, max_attempts, fetch_event)
        if status == "skipped":
            result.skipped += 1
        else:
            buckets[status].append(event_id)
    return result
