"""`/v1/events`: every snapshot event the emulator produced, delivered or not, for 30 days.

Resources emit an event for each change they make (a subscription created, updated, canceled);
the event is kept here and queued for the webhook endpoint if one is configured. Its
`pending_webhooks` counts the endpoints that have not answered 2xx yet, which is what the list's
`delivery_success=false` filter selects: a receiver that was down or misconfigured can list what
it missed, as Stripe's guide to missed webhooks recommends.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from stripe_emulator.errors import invalid, no_such
from stripe_emulator.ids import new_id
from stripe_emulator.pagination import int_param, paginate
from stripe_emulator.sdk_types import API_VERSION
from stripe_emulator.store import Store

RETENTION_S = 30 * 86400
MAX_TYPES = 20
_CREATED_BOUNDS = {
    "gt": lambda created, bound: created > bound,
    "gte": lambda created, bound: created >= bound,
    "lt": lambda created, bound: created < bound,
    "lte": lambda created, bound: created <= bound,
}


class Events:
    def __init__(self, store: Store) -> None:
        self._store = store

    def emit(
        self,
        event_type: str,
        obj: dict[str, Any],
        *,
        previous_attributes: dict[str, Any] | None = None,
        request: dict[str, str | None] | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        """Record an event about `obj` (a snapshot: later changes to `obj` are not in it).

        `request` is the API request that caused it (`id`, `idempotency_key`); changes Stripe
        makes on its own (a payment settled, a period ending) have none. `created` defaults to
        the emulator clock; billing passes the instant a period ended when the clock jumped
        past it, so events keep the order and times they would have had.
        """
        store = self._store
        with store.lock:
            data: dict[str, Any] = {"object": _copy(obj)}
            if previous_attributes is not None:
                data["previous_attributes"] = _copy(previous_attributes)
            event: dict[str, Any] = {
                "id": new_id("evt_test_", 24),
                "object": "event",
                "api_version": API_VERSION,
                "created": store.clock.now() if created is None else created,
                "data": data,
                "livemode": False,
                "pending_webhooks": 1 if store.settings.webhook_endpoint else 0,
                "request": request or {"id": None, "idempotency_key": None},
                "type": event_type,
            }
            store.data.v1_events.append(event)
            store.event_outbox.append(event)
            store.dirty = True
            return event

    def drain_outbox(self) -> list[dict[str, Any]]:
        """Snapshot events produced since the last call, for the webhook deliverer (which
        sends them only if an endpoint is configured) and the contract check."""
        with self._store.lock:
            drained, self._store.event_outbox = self._store.event_outbox, []
            return drained

    def record_delivery(self, event_id: str, status: int | str) -> None:
        """A 2xx answer means the endpoint has the event; anything else leaves it pending."""
        if not (isinstance(status, int) and 200 <= status < 300):
            return
        with self._store.lock:
            for event in self._store.data.v1_events:
                if event["id"] == event_id:
                    event["pending_webhooks"] = max(0, event["pending_webhooks"] - 1)
                    self._store.dirty = True
                    return

    def _retained(self) -> list[dict[str, Any]]:
        since = self._store.clock.now() - RETENTION_S
        return [event for event in self._store.data.v1_events if event["created"] >= since]

    def retrieve(self, event_id: str) -> dict[str, Any]:
        with self._store.lock:
            for event in self._retained():
                if event["id"] == event_id:
                    return event
            raise no_such("event", event_id)

    def list_page(self, params: dict[str, Any]) -> dict[str, Any]:
        """Newest first (ties: the later-produced first), filtered, with cursor pagination."""
        with self._store.lock:
            events = sorted(
                reversed(self._retained()), key=lambda event: event["created"], reverse=True
            )
            events = [event for event in events if _created_matches(event, params)]
            events = _of_types(events, params)
            delivered = params.get("delivery_success")
            if delivered is not None:
                if delivered not in ("true", "false"):
                    raise invalid(f"Invalid boolean: {delivered}", param="delivery_success")
                wanted_pending = delivered == "false"
                events = [e for e in events if (e["pending_webhooks"] > 0) == wanted_pending]
            return paginate(events, params, "/v1/events")


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _created_matches(event: dict[str, Any], params: dict[str, Any]) -> bool:
    created = params.get("created")
    if created is None:
        return True
    if not isinstance(created, dict):
        exact = int_param(params, "created")
        return bool(event["created"] == exact)
    for bound in created:  # only gt|gte|lt|lte get here (request_rules.py)
        limit = int_param(created, bound)
        if not _CREATED_BOUNDS[bound](event["created"], limit):
            return False
    return True


def _of_types(events: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """`type` (one name or a `*` pattern) or `types` (up to 20 names), never both."""
    one, many = params.get("type"), params.get("types")
    if one is not None and many is not None:
        raise invalid("You may pass either `type` or `types`, but not both.", param="types")
    if one is not None:
        return [e for e in events if fnmatch.fnmatchcase(e["type"], str(one))]
    if many is None:
        return events
    names = many if isinstance(many, list) else [many]
    if len(names) > MAX_TYPES:
        raise invalid(f"`types` accepts at most {MAX_TYPES} event types.", param="types")
    return [e for e in events if e["type"] in names]
