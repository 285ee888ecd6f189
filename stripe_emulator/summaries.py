"""`/v1/billing/meters/{id}/event_summaries`: a meter's aggregate per customer and window."""

from __future__ import annotations

import hashlib
from typing import Any

from stripe_emulator.aggregation import MeterUsage, meter_usage
from stripe_emulator.customers import Customers
from stripe_emulator.errors import invalid, missing_param
from stripe_emulator.meters import GROUPING_WINDOWS, Meters
from stripe_emulator.pagination import int_param, paginate
from stripe_emulator.store import Store


def _summary(meter_id: str, customer: str, start: int, end: int, value: float) -> dict[str, Any]:
    digest = hashlib.sha256(f"{meter_id}|{customer}|{start}|{end}".encode()).hexdigest()
    return {
        "id": f"mtrusg_test_{digest[:40]}",
        "object": "billing.meter_event_summary",
        "aggregated_value": value,
        "end_time": end,
        "livemode": False,
        "meter": meter_id,
        "start_time": start,
    }


class Summaries:
    def __init__(self, store: Store, meters: Meters, customers: Customers) -> None:
        self._store = store
        self._meters = meters
        self._customers = customers

    def usage(self, meter_id: str, customer: str) -> MeterUsage:
        """What `customer` is billed on the meter, valued per period with `.value(start, end)`.

        Summaries and anything else that bills a period (invoices) go through here, so every
        view applies the same cancels, pre-aggregation windows and switches.
        """
        store = self._store
        with store.lock:
            meter, settings = self._meters.retrieve(meter_id), store.settings
            mine = store.event_index.for_customer(meter_id, customer)
            return meter_usage(meter, customer, mine, settings.last_mode, settings.newer_mode)

    def list_page(self, meter_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Every window is listed (0 when empty), oldest first, each valued by `usage`."""
        customer = params.get("customer")
        if not customer:
            raise missing_param("customer")
        start = int_param(params, "start_time")
        end = int_param(params, "end_time")
        assert start is not None and end is not None
        for name, value in (("start_time", start), ("end_time", end)):
            if value % 60:
                raise invalid(f"{name} must be aligned with minute boundaries.", param=name)
        if start >= end:
            raise invalid("start_time must be before end_time.", param="start_time")
        grouping = params.get("value_grouping_window")
        if grouping is not None and grouping not in GROUPING_WINDOWS:
            raise invalid(
                "Invalid value_grouping_window: must be one of day, hour",
                param="value_grouping_window",
            )
        store = self._store
        with store.lock:
            usage = self.usage(meter_id, str(customer))  # an unknown meter is a 404 first
            self._customers.retrieve(str(customer))
            if grouping is None:
                windows = [(start, end)]
            else:
                size = GROUPING_WINDOWS[grouping]
                for name, value in (("start_time", start), ("end_time", end)):
                    if value % size:
                        raise invalid(
                            f"{name} must be aligned with the value_grouping_window ({grouping}) "
                            "boundaries in UTC.",
                            param=name,
                        )
                windows = [(s, s + size) for s in range(start, end, size)]
            summaries = [
                _summary(meter_id, str(customer), s, e, usage.value(s, e)) for s, e in windows
            ]
            return paginate(summaries, params, f"/v1/billing/meters/{meter_id}/event_summaries")
