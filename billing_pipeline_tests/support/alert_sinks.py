"""An alert sink for tests: the demo's (a real HTTP server in a thread) that can refuse for a
while, and waits for what it received."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from billing_demo.dev.alert_sink import AlertSink
from billing_pipeline.alerts.messages import Alert

# A failed billing run as the run-failure sensor describes it.
RUN_ALERT = Alert(
    key="run/abc",
    kind="run",
    title="run of daily_billing failed",
    severity="error",
    run_id="abc",
    run_url="http://127.0.0.1:3000/runs/abc",
    days=("2026-12-05",),
    customers=("cus_A",),
)


class RecordingSink(AlertSink):
    """Answers each status of `refusals` in turn (e.g. 500, 500), then 200."""

    def __init__(self, refusals: Iterable[int] = ()) -> None:
        super().__init__(port=0)
        self.refusals = list(refusals)
        self.refused = 0

    def answer(self, path: str) -> int:
        if self.refusals:
            self.refused += 1
            return self.refusals.pop(0)
        return 200

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for where, body in self.received if where == path]

    def wait_for(self, count: int, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        """Wait until at least `count` alerts arrived; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(self.received) >= count, f"expected {count} alerts, got {self.received}"
        return list(self.received)
