"""Processing of Stripe's thin meter-error events: fetch the full event, mark the ledger rows.

A thin event carries only an id and a type, so the handler fetches the event from Stripe
(`GET /v2/core/events/{id}`) with the secret key. Without a key it raises HandlerError: the event
stays in the inbox, is retried, and is dead-lettered (visible in Dagster) rather than dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection

from billing_pipeline import config
from billing_pipeline.reporting.error_reports import (
    MalformedErrorReportError,
    mark_reported_rows_rejected,
    reported_errors,
)
from billing_pipeline.stripe_api import StripeBilling
from billing_pipeline.webhooks.inbox import ClaimedEvent
from billing_pipeline.webhooks.subscriptions import IGNORED, PROCESSED, HandlerError

logger = logging.getLogger(__name__)

EventFetcher = Callable[[str], Mapping[str, Any]]


def fetcher_from_env() -> EventFetcher | None:
    """Fetch full events with `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE`), or None without a key.

    Read from the environment like the rest of the webhook side, which binds no Stripe resource:
    the webhook definitions must load, and snapshot events must process, without a key.
    """
    key = config.env(config.STRIPE_SECRET_KEY)
    if key is None:
        return None
    return StripeBilling(key, config.env(config.STRIPE_API_BASE)).retrieve_event


def apply_error_report(
    connection: Connection, event: ClaimedEvent, fetch_event: EventFetcher | None
) -> str:
    """Mark the ledger rows a meter error report names as failed, in the caller's transaction."""
    if fetch_event is None:
        raise HandlerError(
            f"event {event.event_id} is a thin event and {config.STRIPE_SECRET_KEY} is not set, "
            "so its body cannot be fetched from Stripe"
        )
    full_event = fetch_event(event.event_id)
    try:
        errors = reported_errors(full_event)
    except MalformedErrorReportError as error:
        raise HandlerError(f"event {event.event_id}: {error}") from error
    marked = mark_reported_rows_rejected(connection, event.event_id, errors)
    logger.info(
        "stripe meter error report %s: %d sample errors, ledger rows marked failed: %s",
        event.event_id,
        len(errors),
        ", ".join(marked) or "none of ours",
    )
    return PROCESSED if marked else IGNORED
