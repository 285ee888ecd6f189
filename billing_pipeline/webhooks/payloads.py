"""Reading an event's `data.object` defensively: every handler reads Stripe objects this way.

A field of the wrong shape is a HandlerError (recorded, retried, then dead-lettered, visible in
Dagster) rather than a crash or a silent default, so a malformed event never half-applies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing_pipeline.webhooks.inbox import ClaimedEvent


class HandlerError(Exception):
    """The event cannot be applied as it stands: recorded, retried, then dead-lettered.

    Messages name ids only, never payload values, because they are logged.
    """


def data_object(event: ClaimedEvent) -> dict[str, Any]:
    """The Stripe object the event is about (a snapshot as of the event's `created`)."""
    data = event.payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise HandlerError(f"event {event.event_id} has no data.object")
    return obj


def id_of(value: object) -> str | None:
    """A Stripe reference: an id string, or an expanded object carrying one."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def timestamp(value: object, field: str) -> datetime | None:
    """A Unix timestamp field as an aware UTC datetime; None stays None."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise HandlerError(f"`{field}` is not a Unix timestamp")
    return datetime.fromtimestamp(value, tz=UTC)
