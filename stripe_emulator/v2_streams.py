"""`/v2/billing/meter_event_session` and `/v2/billing/meter_event_stream`.

The stream authenticates with a short-lived session token instead of the API key. Schema
errors are synchronous; rule violations become error reports (Stripe validates streams
asynchronously) and duplicates are dropped silently.
"""

from __future__ import annotations

from typing import Any

from stripe_emulator.clock import iso8601
from stripe_emulator.error_reports import ErrorReports
from stripe_emulator.errors import StripeAPIError, invalid, missing_param
from stripe_emulator.ids import new_id
from stripe_emulator.meter_event_rules import MeterEventRules, RejectedEventError
from stripe_emulator.store import Store

SESSION_TTL_S = 15 * 60
MAX_STREAM_EVENTS = 100


class MeterEventStream:
    def __init__(self, store: Store, rules: MeterEventRules, reports: ErrorReports) -> None:
        self._store = store
        self._rules = rules
        self._reports = reports

    def create_session(self) -> dict[str, Any]:
        with self._store.lock:
            now = self._store.clock.now()
            token = new_id("meter_event_session_token_", 40)
            self._store.data.sessions[token] = now + SESSION_TTL_S
            return {
                "id": new_id("mes_test_"),
                "object": "v2.billing.meter_event_session",
                "authentication_token": token,
                "created": iso8601(now),
                "expires_at": iso8601(now + SESSION_TTL_S),
                "livemode": False,
            }

    def check_session(self, token: str | None) -> None:
        with self._store.lock:
            expires_at = self._store.data.sessions.get(token or "")
            if expires_at is None:
                raise StripeAPIError(
                    401,
                    "Invalid authentication token for the meter event stream.",
                    error_type="authentication_error",
                )
            if self._store.clock.now() >= expires_at:
                raise StripeAPIError(
                    401,
                    "The meter event session has expired. Create a new meter event session.",
                    error_type="temporary_session_expired",
                    code="billing_meter_event_session_expired",
                )

    def stream(self, body: Any, request_id: str) -> None:
        """Schema errors are synchronous; every rule violation becomes an error report."""
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or not events:
            raise invalid("events must be a non-empty array.", param="events")
        if len(events) > MAX_STREAM_EVENTS:
            raise invalid(
                f"events can contain at most {MAX_STREAM_EVENTS} items, got {len(events)}.",
                param="events",
            )
        for index, item in enumerate(events):
            if not isinstance(item, dict) or not isinstance(item.get("payload"), dict):
                raise invalid(f"events[{index}] must have a payload object.", param="events")
            if not item.get("event_name"):
                raise missing_param(f"events[{index}].event_name")
        with self._store.lock:
            for item in events:
                try:
                    self._rules.ingest(item, timestamp=item.get("timestamp"), source="v2")
                except RejectedEventError as rejection:
                    if rejection.code != "duplicate_identifier":
                        self._reports.report(rejection, item, request_id, source="v2")
