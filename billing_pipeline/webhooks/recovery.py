"""Recover the events Stripe could not deliver, from its event list, into the inbox.

Stripe retries a delivery for three days and keeps events for 30; a receiver down longer, or an
endpoint misconfigured, would lose events for good. Recovery lists Stripe's events of the handled
types (`GET /v1/events`) from a margin before the last confirmed point and stores every one the
inbox does not hold, through the very insert the receiver uses (`inbox.store_event`, idempotent
on the event id). Processing then cannot tell how an event arrived.

It lists every event, not only `delivery_success=false`: an event delivered to another endpoint
(an old URL, a second environment) counts as delivered at Stripe but is still missing here. The
inbox, not Stripe's delivery flag, decides what is missing.

The confirmed point (`billing.webhook_recovery`) is the `created` of the newest event listed: all
older events are in the inbox. The next run lists again from OVERLAP before it, because Stripe's
`created` has one-second resolution and its list may show an event a moment after it happened;
relisting costs one indexed lookup per event. A point older than Stripe's 30-day retention means
events may have been lost before recovery ran: the result says so (`retention_gap`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text
from sqlalchemy.exc import DataError

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.webhooks import inbox
from billing_pipeline.webhooks.events import MalformedEventError, parse_snapshot_event
from billing_pipeline.webhooks.handlers import SNAPSHOT_EVENT_TYPES

logger = logging.getLogger(__name__)

SOURCE = "stripe_v1_events"
RETENTION = timedelta(days=30)
OVERLAP = timedelta(minutes=10)


@dataclass
class RecoveryResult:
    """What one recovery did, for the run's metadata and the CLI."""

    listed_since: datetime | None
    listed: int = 0
    recovered: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    confirmed_until: datetime | None = None
    retention_gap: bool = False


def confirmed_until(engine: Engine) -> datetime | None:
    """The last confirmed point: every event created before it is in the inbox."""
    with engine.connect() as connection:
        point: datetime | None = connection.execute(
            text("SELECT confirmed_until FROM billing.webhook_recovery WHERE source = :source"),
            {"source": SOURCE},
        ).scalar_one_or_none()
    return point


def _confirm(engine: Engine, point: datetime) -> None:
    """Move the point forward, never back (an operator's `--since` may list an older range)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO billing.webhook_recovery (source, confirmed_until)
                VALUES (:source, :point)
                ON CONFLICT (source) DO UPDATE
                SET confirmed_until = GREATEST(webhook_recovery.confirmed_until,
                                               EXCLUDED.confirmed_until),
                    updated_at = now()
                """
            ),
            {"source": SOURCE, "point": point},
        )


def recover_missed_events(
    engine: Engine,
    stripe: StripeBilling,
    since: datetime | None = None,
    now: datetime | None = None,
) -> RecoveryResult:
    """List Stripe's events since `since` (default: the confirmed point minus OVERLAP, or all
    of Stripe's 30 days the first time) and store the missing ones, oldest first."""
    now = now or datetime.now(UTC)
    point = confirmed_until(engine)
    start = since if since is not None else (None if point is None else point - OVERLAP)
    result = RecoveryResult(
        listed_since=start,
        retention_gap=start is not None and start < now - RETENTION,
    )
    if result.retention_gap:
        logger.warning(
            "recovering stripe events since %s, beyond Stripe's 30-day retention: older events "
            "Stripe did not deliver are lost",
            start,
        )
    events = stripe.list_events(SNAPSHOT_EVENT_TYPES, created_gte=start)
    result.listed = len(events)
    stored = inbox.stored_event_ids(engine, [event["id"] for event in events])
    # Stripe lists newest first: reversed, inbox ids follow the order Stripe produced them in.
    for event in reversed(events):
        if event["id"] in stored:
            continue
        try:
            inserted = inbox.store_event(engine, parse_snapshot_event(json.dumps(event)))
        except (MalformedEventError, DataError) as error:
            logger.error("stripe event %s not recoverable: %s", event["id"], type(error).__name__)
            result.refused.append(event["id"])
            continue
        if inserted:  # else the receiver stored it in the meantime
            result.recovered.append(event["id"])
    if events:
        newest = datetime.fromtimestamp(max(event["created"] for event in events), tz=UTC)
        _confirm(engine, newest)
    result.confirmed_until = confirmed_until(engine)
    logger.info(
        "stripe events listed: %d, recovered into the inbox: %d",
        result.listed,
        len(result.recovered),
    )
    return result
