"""`/v1/billing/meter_events` and `/v1/billing/meter_event_adjustments`.

v1 answers rule violations synchronously, except an unknown customer, which Stripe only finds
later (an error report) unless the `reject` switch asks for Stripe's stricter behaviour.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from stripe_emulator.error_reports import ErrorReports
from stripe_emulator.errors import invalid, missing_param
from stripe_emulator.meter_event_rules import MeterEventRules, RejectedEventError
from stripe_emulator.records import MeterEvent
from stripe_emulator.store import Store
from stripe_emulator.test_clocks import TestClocks

CANCEL_WINDOW_S = 24 * 3600


def _meter_event_object(
    params: dict[str, Any], now: int, event: MeterEvent | None = None
) -> dict[str, Any]:
    return {
        "object": "billing.meter_event",
        "created": now,
        "event_name": params.get("event_name"),
        "identifier": event.identifier if event else params.get("identifier"),
        "livemode": False,
        "payload": event.payload if event else dict(params.get("payload") or {}),
        "timestamp": event.timestamp if event else now,
    }


class MeterEvents:
    def __init__(
        self, store: Store, rules: MeterEventRules, reports: ErrorReports, clocks: TestClocks
    ) -> None:
        self._store = store
        self._rules = rules
        self._reports = reports
        self._clocks = clocks

    def try_acquire_slot(self, customer: str, meter_id: str) -> bool:
        """Stripe allows one concurrent meter event call per customer per meter."""
        with self._store.lock:
            if (customer, meter_id) in self._store.inflight:
                return False
            self._store.inflight.add((customer, meter_id))
            return True

    def release_slot(self, customer: str, meter_id: str) -> None:
        with self._store.lock:
            self._store.inflight.discard((customer, meter_id))

    def create(self, params: dict[str, Any], request_id: str) -> dict[str, Any]:
        """v1: rule violations are synchronous 400s, except what Stripe checks later."""
        store = self._store
        with store.lock:
            try:
                event = self._rules.ingest(params, timestamp=params.get("timestamp"), source="v1")
            except RejectedEventError as rejection:
                if rejection.code != "meter_event_customer_not_found" or (
                    store.settings.unknown_customer_mode == "reject"
                ):
                    raise rejection.error from None
                self._reports.report(rejection, params, request_id, source="v1")
                return _meter_event_object(params, store.clock.now())
            return _meter_event_object(params, event.received_at, event)

    def cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        """Adjustments can only cancel, and only within 24 h of Stripe receiving the event
        (on the customer's clock, which is the one its arrival was stamped with)."""
        if params.get("type", "cancel") != "cancel":
            raise invalid("Invalid type: must be cancel", param="type")
        event_name = params.get("event_name")
        identifier = (params.get("cancel") or {}).get("identifier")
        if not event_name:
            raise missing_param("event_name")
        if not identifier:
            raise missing_param("cancel[identifier]")
        store = self._store
        with store.lock:
            event = next(
                (
                    e
                    for e in reversed(store.event_index.with_identifier(str(identifier)))
                    if e.event_name == event_name
                ),
                None,
            )
            if event is None:
                raise invalid(
                    f"No meter event found with identifier {identifier} for event_name "
                    f"'{event_name}'.",
                    param="cancel[identifier]",
                )
            now = self._clocks.now_for(event.customer)
            if now - event.received_at >= CANCEL_WINDOW_S:
                raise invalid(
                    "Meter events can only be cancelled within 24 hours of being received.",
                    param="cancel[identifier]",
                )
            if event.cancelled_at is not None:
                raise invalid(
                    f"The meter event with identifier {identifier} has already been cancelled.",
                    param="cancel[identifier]",
                )
            event.cancelled_at = now
            store.dirty = True
            return {
                "object": "billing.meter_event_adjustment",
                "cancel": {"identifier": identifier},
                "event_name": event_name,
                "livemode": False,
                "status": "pending",
                "type": "cancel",
            }

    def records(self, after: int = 0) -> list[dict[str, Any]]:
        """Every stored event, or those stored after sequence number `after` (a benchmark holding
        a million events checks each run's own without fetching them all again)."""
        with self._store.lock:
            return [asdict(e) for e in self._store.data.events if e.seq > after]
