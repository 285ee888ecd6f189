"""`EmulatorState`: every emulated Stripe resource, composed over one store and its lock.

Each resource module holds its own rules (see shared/reference/stripe-billing-meters.md); the
meter event rules are written once in `meter_event_rules.py` and used by both the v1 endpoint
(synchronous errors) and the v2 stream (error reports). The HTTP layer only decodes requests
and renders what the resources return or raise. This class adds what is global: the clock, the
switches tests flip, reset and the `--state-file` snapshot.
"""

from __future__ import annotations

from typing import Any

from stripe_emulator.billing import Billing
from stripe_emulator.customers import Customers
from stripe_emulator.error_reports import ErrorReports
from stripe_emulator.errors import invalid
from stripe_emulator.events import Events
from stripe_emulator.idempotency import IdempotencyKeys
from stripe_emulator.invoice_previews import InvoicePreviews
from stripe_emulator.invoices import MAX_GRACE_PERIOD_S, Invoices
from stripe_emulator.meter_event_rules import MeterEventRules
from stripe_emulator.meter_events import MeterEvents
from stripe_emulator.meters import Meters
from stripe_emulator.prices import Catalog
from stripe_emulator.store import Settings, Store
from stripe_emulator.subscriptions import Subscriptions
from stripe_emulator.summaries import Summaries
from stripe_emulator.test_clocks import TestClocks
from stripe_emulator.v2_streams import MeterEventStream


class EmulatorState:
    def __init__(self, defaults: Settings | None = None) -> None:
        self._store = store = Store(defaults)
        self.events = Events(store)
        self.test_clocks = TestClocks(store, self.events)
        self.customers = Customers(store)
        self.meters = Meters(store)
        self.error_reports = ErrorReports(store)
        rules = MeterEventRules(store, self.meters, self.customers, self.test_clocks)
        self.meter_events = MeterEvents(store, rules, self.error_reports, self.test_clocks)
        self.stream = MeterEventStream(store, rules, self.error_reports)
        self.summaries = Summaries(store, self.meters, self.customers)
        self.idempotency = IdempotencyKeys(store)
        self.catalog = Catalog(store, self.meters)
        self.subscriptions = Subscriptions(
            store, self.customers, self.events, self.catalog, self.test_clocks
        )
        self.invoices = Invoices(store, self.events, self.summaries, self.catalog)
        self.invoice_previews = InvoicePreviews(
            store, self.invoices, self.subscriptions, self.test_clocks
        )
        self.billing = Billing(store, self.subscriptions, self.invoices, self.test_clocks)

    @property
    def settings(self) -> Settings:
        return self._store.settings

    @property
    def dirty(self) -> bool:
        """Something changed since the last snapshot."""
        return self._store.dirty

    # -- clock and switches -------------------------------------------------------------------

    def now(self) -> int:
        with self._store.lock:
            return self._store.clock.now()

    def advance_clock(self, seconds: float) -> int:
        """Move the emulator clock and run the billing that fell due on the way (customers
        without a test clock), so the demo's time can cross period ends too."""
        with self._store.lock:
            self._store.clock.advance(seconds)
            self._store.dirty = True
            self.billing.run_due()
            return self._store.clock.now()

    def set_clock(self, unix_ts: float) -> int:
        """Like `advance_clock`; moving back runs nothing and undoes nothing."""
        with self._store.lock:
            self._store.clock.set(unix_ts)
            self._store.dirty = True
            self.billing.run_due()
            return self._store.clock.now()

    def set_invoice_grace_period(self, seconds: int) -> None:
        """The account's invoice finalization grace period, for drafts made from now on."""
        if not 0 <= seconds <= MAX_GRACE_PERIOD_S:
            raise invalid("The grace period must be between 0 and 72 hours.", param="seconds")
        with self._store.lock:
            self._store.settings.invoice_grace_period_s = seconds

    def set_last_mode(self, mode: str) -> None:
        if mode not in ("timestamp", "arrival"):
            raise invalid(f"Invalid last mode: {mode}", param="mode")
        with self._store.lock:
            self._store.settings.last_mode = mode  # type: ignore[assignment]

    def set_newer_mode(self, mode: str) -> None:
        """Which event of a pre-aggregated meter's window survives: latest arrival or timestamp."""
        if mode not in ("arrival", "timestamp"):
            raise invalid(f"Invalid newer mode: {mode}", param="mode")
        with self._store.lock:
            self._store.settings.newer_mode = mode  # type: ignore[assignment]

    def set_negative_values(self, mode: str) -> None:
        """Whether meter events may carry negative values (`allowed`) or not (`refused`)."""
        if mode not in ("allowed", "refused"):
            raise invalid(f"Invalid negative values mode: {mode}", param="mode")
        with self._store.lock:
            self._store.settings.negative_values = mode  # type: ignore[assignment]

    def set_unknown_customer_mode(self, mode: str) -> None:
        if mode not in ("async", "reject"):
            raise invalid(f"Invalid unknown customer mode: {mode}", param="mode")
        with self._store.lock:
            self._store.settings.unknown_customer_mode = mode  # type: ignore[assignment]

    def set_webhook_endpoint(self, url: str | None) -> None:
        """Where snapshot events (`customer.subscription.*`, `invoice.*`, …) are delivered."""
        with self._store.lock:
            self._store.settings.webhook_endpoint = url or None

    def set_event_destination(self, url: str | None) -> None:
        """Where thin events (meter error reports) are delivered."""
        with self._store.lock:
            self._store.settings.event_destination = url or None

    # -- lifecycle ----------------------------------------------------------------------------

    def reset(self) -> None:
        self._store.reset()

    def snapshot(self) -> dict[str, Any]:
        return self._store.snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        self._store.restore(snapshot)
