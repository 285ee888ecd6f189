"""What one emulator instance shares between its API routes and its control routes."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from stripe_emulator.faults import Faults
from stripe_emulator.response_shapes import response_violations
from stripe_emulator.state import EmulatorState
from stripe_emulator.webhooks import WebhookDeliverer, thin_notification


@dataclass
class Runtime:
    """Everything one emulator instance shares between its API and control routes."""

    state: EmulatorState
    faults: Faults
    deliverer: WebhookDeliverer
    counts: Counter[str] = field(default_factory=Counter)
    # Answered API requests by route (the Flask endpoint name, e.g. `list_event_summaries`):
    # how many calls of one kind a client made, whatever their answers.
    endpoint_counts: Counter[str] = field(default_factory=Counter)
    counts_lock: threading.Lock = field(default_factory=threading.Lock)
    # Contract mode (tests): each API response and each snapshot event is checked against its
    # published shape; a departing response answers 500 instead, a departing event is listed in
    # `violations` (it cannot fail a delivery); `contract` counts what was checked.
    check_responses: bool = False
    contract: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def count(self, key: str, endpoint: str | None = None) -> None:
        with self.counts_lock:
            self.counts[key] += 1
            if endpoint is not None:
                self.endpoint_counts[endpoint] += 1

    def record_contract(self, endpoint: str, violations: list[str]) -> None:
        with self.counts_lock:
            self.contract[endpoint] += 1
            self.violations.extend(f"{endpoint}: {violation}" for violation in violations)

    def hand_over_events(self) -> None:
        """Queue the events produced so far for delivery: snapshot events for the webhook
        endpoint (their outcome updates `pending_webhooks`), thin events for the event
        destination. Called after each request and after billing ran on its own."""
        state = self.state
        endpoint, destination = state.settings.webhook_endpoint, state.settings.event_destination
        for event in state.events.drain_outbox():
            if self.check_responses:
                self.record_contract(f"event {event['type']}", response_violations(event))
            if endpoint:
                self.deliverer.enqueue(endpoint, event, state.events.record_delivery)
        for event in state.error_reports.drain_notifications():
            if destination:
                self.deliverer.enqueue(destination, thin_notification(event))
