"""`/v1/billing/meters`: creation rules, lookup by event name, deactivation."""

from __future__ import annotations

from typing import Any

from stripe_emulator.errors import existing, invalid, missing_param
from stripe_emulator.ids import new_id
from stripe_emulator.pagination import paginate
from stripe_emulator.store import Store

MAX_NAME_LENGTH = 100
FORMULAS = ("count", "sum", "last")
GROUPING_WINDOWS = {"day": 86400, "hour": 3600}


class Meters:
    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        display_name = params.get("display_name")
        event_name = params.get("event_name")
        formula = (params.get("default_aggregation") or {}).get("formula")
        if not display_name:
            raise missing_param("display_name")
        if not event_name:
            raise missing_param("event_name")
        if not formula:
            raise missing_param("default_aggregation[formula]")
        if formula not in FORMULAS:
            raise invalid(
                f"Invalid default_aggregation[formula]: must be one of {', '.join(FORMULAS)}",
                param="default_aggregation[formula]",
            )
        if len(event_name) > MAX_NAME_LENGTH:
            raise invalid(
                f"event_name must be at most {MAX_NAME_LENGTH} characters.", param="event_name"
            )
        customer_mapping = params.get("customer_mapping") or {}
        value_settings = params.get("value_settings") or {}
        window = params.get("event_time_window")
        if window is not None and window not in GROUPING_WINDOWS:
            raise invalid(
                "Invalid event_time_window: must be one of day or hour", param="event_time_window"
            )
        store = self._store
        with store.lock:
            if self.for_event_name(event_name) is not None:
                raise invalid(
                    f"A meter with event_name '{event_name}' already exists.", param="event_name"
                )
            now = store.clock.now()
            meter = {
                "id": new_id("mtr_test_"),
                "object": "billing.meter",
                "created": now,
                "customer_mapping": {
                    "event_payload_key": customer_mapping.get(
                        "event_payload_key", "stripe_customer_id"
                    ),
                    "type": customer_mapping.get("type", "by_id"),
                },
                "default_aggregation": {"formula": formula},
                "display_name": display_name,
                "event_name": event_name,
                "event_time_window": window,
                "livemode": False,
                "status": "active",
                "status_transitions": {"deactivated_at": None},
                "updated": now,
                "value_settings": {
                    "event_payload_key": value_settings.get("event_payload_key", "value")
                },
            }
            store.data.meters[meter["id"]] = meter
            store.dirty = True
            return meter

    def retrieve(self, meter_id: str) -> dict[str, Any]:
        with self._store.lock:
            return existing(self._store.data.meters, "billing.meter", meter_id)

    def for_event_name(self, event_name: str) -> dict[str, Any] | None:
        with self._store.lock:
            return next(
                (m for m in self._store.data.meters.values() if m["event_name"] == event_name),
                None,
            )

    def list_page(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._store.lock:
            items = list(reversed(self._store.data.meters.values()))
            if params.get("status"):
                items = [m for m in items if m["status"] == params["status"]]
            return paginate(items, params, "/v1/billing/meters")

    def update(self, meter_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Only the display name can change: aggregation and `event_time_window` are fixed at
        creation, and Stripe's update endpoint has no such parameters, so request_rules.py
        refuses them as unknown before this runs."""
        with self._store.lock:
            meter = self.retrieve(meter_id)
            if params.get("display_name"):
                meter["display_name"] = params["display_name"]
                meter["updated"] = self._store.clock.now()
                self._store.dirty = True
            return meter

    def set_active(self, meter_id: str, active: bool) -> dict[str, Any]:
        with self._store.lock:
            meter = self.retrieve(meter_id)
            now = self._store.clock.now()
            meter["status"] = "active" if active else "inactive"
            meter["status_transitions"] = {"deactivated_at": None if active else now}
            meter["updated"] = now
            self._store.dirty = True
            return meter
