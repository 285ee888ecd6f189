"""What one emulator instance shares between its API routes and its control routes."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from stripe_emulator.faults import Faults
from stripe_emulator.state import EmulatorState
from stripe_emulator.webhooks import WebhookDeliverer


@dataclass
class Runtime:
    """Everything one emulator instance shares between its API and control routes."""

    state: EmulatorState
    faults: Faults
    deliverer: WebhookDeliverer
    counts: Counter[str] = field(default_factory=Counter)
    counts_lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, key: str) -> None:
        with self.counts_lock:
            self.counts[key] += 1
