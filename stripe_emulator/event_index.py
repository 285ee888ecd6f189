"""Stored meter events indexed by (meter, customer) and by identifier.

Stripe answers a summaries call from the customer's own events; the emulator kept every event in
one list and scanned all of it on each call, so a benchmark holding a million events measured the
emulator, not the pipeline. The index is derived from `Data.events` (arrival order kept within
each key) and never snapshotted: `Store` rebuilds it whenever it replaces the data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from stripe_emulator.records import MeterEvent


class EventIndex:
    def __init__(self, events: Iterable[MeterEvent] = ()) -> None:
        self._by_key: defaultdict[tuple[str, str], list[MeterEvent]] = defaultdict(list)
        self._by_identifier: defaultdict[str, list[MeterEvent]] = defaultdict(list)
        for event in events:
            self.add(event)

    def add(self, event: MeterEvent) -> None:
        self._by_key[(event.meter, event.customer)].append(event)
        self._by_identifier[event.identifier].append(event)

    def for_customer(self, meter_id: str, customer: str) -> list[MeterEvent]:
        """`customer`'s events on the meter, in arrival order (a copy: callers may sort it)."""
        return list(self._by_key.get((meter_id, customer), ()))

    def with_identifier(self, identifier: str) -> list[MeterEvent]:
        """Every stored event with this identifier, in arrival order (one per event name at most
        within Stripe's 24-hour window, more once older ones have left it)."""
        return list(self._by_identifier.get(identifier, ()))
