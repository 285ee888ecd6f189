"""The one lock, the clock, the switches and every stored object, shared by all resources.

Each resource module keeps its own rules but works on this store under its lock, so a request
that touches several resources (a meter event checks its meter and its customer) sees one
consistent state, and a snapshot for `--state-file` is one JSON document.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from stripe_emulator.clock import Clock
from stripe_emulator.event_index import EventIndex
from stripe_emulator.records import ErrorReport, MeterEvent, SavedResponse

LastMode = Literal["timestamp", "arrival"]
NewerMode = Literal["arrival", "timestamp"]
UnknownCustomerMode = Literal["async", "reject"]
NegativeValues = Literal["allowed", "refused"]


@dataclass
class Settings:
    """The switches tests flip; `reset` returns to the ones the emulator was started with."""

    last_mode: LastMode = "timestamp"
    newer_mode: NewerMode = "arrival"
    unknown_customer_mode: UnknownCustomerMode = "async"
    # Stripe's v2 reference says a meter event value "must be a positive integer", v1 states no
    # sign rule: unconfirmed, so switchable; `allowed` is what v1's reference reads as.
    negative_values: NegativeValues = "allowed"
    # Stripe sends snapshot (v1) events to a webhook endpoint and thin (v2) events to an event
    # destination; the pipeline receives them on two URLs.
    webhook_endpoint: str | None = None
    event_destination: str | None = None
    # Stripe's invoice finalization grace period: default 1 h, settable up to 72 h.
    invoice_grace_period_s: int = 3600


@dataclass
class Data:
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    meters: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[MeterEvent] = field(default_factory=list)
    identifiers: dict[str, int] = field(default_factory=dict)
    error_reports: list[ErrorReport] = field(default_factory=list)
    v2_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    test_clocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every snapshot event produced, oldest first, delivered or not (`GET /v1/events`).
    v1_events: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, int] = field(default_factory=dict)
    idempotency: dict[str, SavedResponse] = field(default_factory=dict)
    next_seq: int = 1


class Store:
    """Resources hold the store, never its parts: `reset` and `restore` replace the parts.

    `inflight` (concurrent meter event calls), `outbox` (thin events not yet handed to the
    webhook deliverer) and `event_outbox` (snapshot events, likewise) are per-process and not
    snapshotted; `event_index` is derived from `data.events` and rebuilt with it.
    """

    def __init__(self, defaults: Settings | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = Clock()
        self.defaults = defaults or Settings()
        self.settings = replace(self.defaults)
        self.data = Data()
        self.event_index = EventIndex()
        self.dirty = False
        self.inflight: set[tuple[str, str]] = set()
        self.outbox: list[dict[str, Any]] = []
        self.event_outbox: list[dict[str, Any]] = []

    def reset(self) -> None:
        with self.lock:
            self.clock = Clock()
            self.settings = replace(self.defaults)
            self.data = Data()
            self.event_index = EventIndex()
            self.inflight.clear()
            self.outbox.clear()
            self.event_outbox.clear()
            self.dirty = True

    def add_event(self, event: MeterEvent) -> None:
        """Store an accepted meter event: the only way events are added, so the index holds."""
        self.data.events.append(event)
        self.event_index.add(event)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            self.dirty = False
            return {
                "clock_offset": self.clock.offset,
                "settings": asdict(self.settings),
                "data": asdict(self.data),
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        with self.lock:
            data = dict(snapshot["data"])
            data["events"] = [MeterEvent(**e) for e in data["events"]]
            data["error_reports"] = [ErrorReport(**r) for r in data["error_reports"]]
            data["idempotency"] = {k: SavedResponse(**v) for k, v in data["idempotency"].items()}
            self.data = Data(**data)
            self.event_index = EventIndex(self.data.events)
            self.settings = Settings(**snapshot["settings"])
            self.clock = Clock(snapshot["clock_offset"])
            self.dirty = False
