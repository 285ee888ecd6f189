"""What the inbox keeps of a verified event, and how a snapshot event body is read into it.

Parsing is strict on purpose: an event the processing job could not order or deduplicate (no id,
no `created`) must be refused at the door with a 400, not stored and found broken later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stripe.v2.core import EventNotification

MAX_ID_LENGTH = 255


class MalformedEventError(ValueError):
    """The body is signed by Stripe but is not a snapshot event we can store."""


@dataclass(frozen=True)
class InboxEvent:
    """One verified event as the inbox stores it.

    `payload_json` is the verified body itself, so the inbox keeps exactly what Stripe signed.
    Thin events (v2 notifications) are stored through the same shape: they too have an id, a
    type, a creation time and a livemode flag; their body is fetched from Stripe when processed.
    """

    event_id: str
    event_type: str
    stripe_created: datetime
    livemode: bool
    api_version: str | None
    payload_json: str


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; Postgres' jsonb (and Stripe) do not.
    raise MalformedEventError(f"JSON constant {name} is not allowed")


def _required_str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise MalformedEventError(f"`{key}` must be a non-empty string")
    return value


def parse_snapshot_event(body: str) -> InboxEvent:
    """Read a v1 snapshot event (`"object": "event"`) from its verified body text."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (json.JSONDecodeError, RecursionError) as error:
        raise MalformedEventError("body is not valid JSON") from error
    if not isinstance(data, dict):
        raise MalformedEventError("body is not a JSON object")
    if data.get("object") != "event":
        raise MalformedEventError("`object` must be `event` (thin events go to their own endpoint)")
    event_id = _required_str(data, "id")
    event_type = _required_str(data, "type")
    created = data.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        raise MalformedEventError("`created` must be an integer Unix timestamp")
    try:
        stripe_created = datetime.fromtimestamp(created, tz=UTC)
    except (OverflowError, OSError, ValueError) as error:
        raise MalformedEventError("`created` is out of range") from error
    livemode = data.get("livemode")
    if not isinstance(livemode, bool):
        raise MalformedEventError("`livemode` must be a boolean")
    api_version = data.get("api_version")
    if api_version is not None and not isinstance(api_version, str):
        raise MalformedEventError("`api_version` must be a string or null")
    if not isinstance(data.get("data"), dict) or not isinstance(data["data"].get("object"), dict):
        raise MalformedEventError("`data.object` must be an object")
    return InboxEvent(
        event_id=event_id,
        event_type=event_type,
        stripe_created=stripe_created,
        livemode=livemode,
        api_version=api_version,
        payload_json=body,
    )


def parse_thin_event(body: str, notification: EventNotification) -> InboxEvent:
    """Read a thin event (`"object": "v2.core.event"`) that the SDK has verified and parsed.

    The SDK's parser checks little beyond `object`; the same strictness as for snapshot events
    applies here, so what reaches the inbox can be ordered (`created`) and deduplicated (`id`).
    """
    fields = {"id": notification.id, "type": notification.type}
    event_id = _required_str(fields, "id")
    event_type = _required_str(fields, "type")
    created = notification.created
    if not isinstance(created, str):
        raise MalformedEventError("`created` must be an RFC 3339 timestamp")
    try:
        stripe_created = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError as error:
        raise MalformedEventError("`created` is not an RFC 3339 timestamp") from error
    if stripe_created.tzinfo is None:
        raise MalformedEventError("`created` has no time zone")
    return InboxEvent(
        event_id=event_id,
        event_type=event_type,
        stripe_created=stripe_created.astimezone(UTC),
        livemode=notification.livemode,
        api_version=None,
        payload_json=body,
    )
