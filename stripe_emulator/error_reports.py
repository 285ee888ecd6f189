"""Errors Stripe finds after accepting a request, and the thin v2 events that announce them.

A report is stored with its full `v2.core.event` (served by `GET /v2/core/events/{id}`) and the
event is queued in the outbox, which the app hands to the webhook deliverer after the response.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from stripe_emulator.clock import iso8601
from stripe_emulator.errors import existing
from stripe_emulator.ids import new_id
from stripe_emulator.meter_event_rules import RejectedEventError
from stripe_emulator.records import ErrorReport
from stripe_emulator.store import Store


def _thin_event(
    event_id: str, rejection: RejectedEventError, identifier: str, now: int
) -> dict[str, Any]:
    message = rejection.error.message
    event: dict[str, Any] = {
        "id": event_id,
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "created": iso8601(now),
        "livemode": False,
        "changes": None,
        "context": None,
        "reason": None,
        "snapshot_event": None,
        "data": {
            "developer_message_summary": message,
            "reason": {
                "error_count": 1,
                "error_types": [
                    {
                        "code": rejection.code,
                        "error_count": 1,
                        "sample_errors": [
                            {"error_message": message, "request": {"identifier": identifier}}
                        ],
                    }
                ],
            },
            "validation_start": iso8601(now),
            "validation_end": iso8601(now),
        },
    }
    if rejection.meter is not None:
        event["related_object"] = {
            "id": rejection.meter,
            "type": "billing.meter",
            "url": f"/v1/billing/meters/{rejection.meter}",
        }
    else:
        event["type"] = "v1.billing.meter.no_meter_found"
    return event


class ErrorReports:
    def __init__(self, store: Store) -> None:
        self._store = store

    def report(
        self,
        rejection: RejectedEventError,
        params: dict[str, Any],
        request_id: str,
        *,
        source: str,
    ) -> None:
        """Record an asynchronous error and the thin v2 event Stripe would send for it."""
        store = self._store
        with store.lock:
            now = store.clock.now()
            identifier = str(params.get("identifier") or request_id)
            event_id = new_id("evt_test_", 32)
            report = ErrorReport(
                id=new_id("mtrerr_"),
                code=rejection.code,
                error_message=rejection.error.message,
                meter=rejection.meter,
                event_name=str(params.get("event_name") or ""),
                customer=rejection.customer,
                identifier=identifier,
                created=now,
                event_id=event_id,
                source=source,
            )
            event = _thin_event(event_id, rejection, identifier, now)
            store.data.error_reports.append(report)
            store.data.v2_events[event_id] = event
            store.outbox.append(event)
            store.dirty = True

    def retrieve_event(self, event_id: str) -> dict[str, Any]:
        with self._store.lock:
            return existing(self._store.data.v2_events, "event", event_id)

    def drain_notifications(self) -> list[dict[str, Any]]:
        """Thin events produced since the last call, for the webhook deliverer."""
        with self._store.lock:
            drained, self._store.outbox = self._store.outbox, []
            return drained

    def records(self) -> list[dict[str, Any]]:
        with self._store.lock:
            return [asdict(r) for r in self._store.data.error_reports]
