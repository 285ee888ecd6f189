"""Process the due inbox: oldest first, one transaction per event, retries spaced in time.

Each event is claimed, applied and closed in one transaction, so a crash leaves it open for the
next run and never half-applied. A handler error is recorded with the attempt count instead of
failing the batch, and the event is not tried again before its backoff is over
(`next_attempt_at`), however often runs are launched: by the sensor, by an operator, or several
at once. The waits (`retries.py`: 45 s, 1.5, 3, 6 and 12 minutes) put the dead letter the asset
check shows no sooner than DEAD_LETTER_AFTER (23 min 15 s) after the first failure. That is time
for what Stripe sends first (subscription and invoice events before `checkout.session.completed`)
to find its organization, and for a missing organization to be created. Database outages are
not the event's fault: they fail the run and cost no attempt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.webhooks import inbox
from billing_pipeline.webhooks.handlers import apply_event
from billing_pipeline.webhooks.payloads import HandlerError
from billing_pipeline.webhooks.retries import DEAD_LETTER_AFTER, MAX_ATTEMPTS, retry_delay

__all__ = [
    "DEAD_LETTER_AFTER",
    "MAX_ATTEMPTS",
    "BatchResult",
    "process_event",
    "process_open_events",
    "retry_delay",
]

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What one run did, for the materialization's metadata."""

    processed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    skipped: int = 0

    def record(self, status: InboxStatus, event_id: str) -> None:
        {
            InboxStatus.PROCESSED: self.processed,
            InboxStatus.IGNORED: self.ignored,
            InboxStatus.FAILED: self.failed,
            InboxStatus.DEAD_LETTER: self.dead_lettered,
        }[status].append(event_id)


def process_event(
    engine: Engine,
    row_id: int,
    max_attempts: int = MAX_ATTEMPTS,
    stripe: StripeBilling | None = None,
) -> tuple[InboxStatus, str] | None:
    """Apply one inbox row; return its new status and event id, or None if the row is already
    closed or another run holds it.

    `stripe` reads what an event does not carry (a thin event's body, a subscription's current
    state when two events tie); snapshot events that do not tie never call Stripe.
    """
    with engine.begin() as connection:
        event = inbox.claim(connection, row_id)
        if event is None:
            return None
        try:
            # A savepoint, so a handler that fails halfway leaves none of its writes behind while
            # the error itself is still recorded in the outer transaction.
            with connection.begin_nested():
                status = apply_event(connection, event, stripe)
        except (OperationalError, InterfaceError):
            raise
        except Exception as error:
            attempts = event.attempts + 1
            status = InboxStatus.DEAD_LETTER if attempts >= max_attempts else InboxStatus.FAILED
            inbox.mark_failed(
                connection,
                row_id,
                attempts,
                f"{type(error).__name__}: {error}",
                status,
                retry_delay(attempts),
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
    engine: Engine, max_attempts: int = MAX_ATTEMPTS, stripe: StripeBilling | None = None
) -> BatchResult:
    """Apply every due event (pending, or failed with its backoff over), oldest first."""
    result = BatchResult()
    for row_id in inbox.due_event_ids(engine):
        outcome = process_event(engine, row_id, max_attempts, stripe)
        if outcome is None:
            result.skipped += 1
        else:
            result.record(*outcome)
    return result
