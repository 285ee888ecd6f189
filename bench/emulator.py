"""The Stripe emulator in its own process, so its request handling does not share our GIL.

In-process (as the tests run it) the emulator and the sender would take turns on one
interpreter lock and the benchmark would measure the sum of both; Stripe is another machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import stripe

from stripe_emulator.control import EmulatorControl

API_KEY = "sk_test_bench"
# Each running emulator's process id by URL, to read its CPU time (`cpu_seconds`).
_PIDS: dict[str, int] = {}


@contextmanager
def emulator_process(pythonpath: str | None = None) -> Iterator[str]:
    """Start `billing-pipeline stripe-emulator --port 0`; yield its base URL; stop it.

    `pythonpath` puts another copy of `stripe_emulator` first (a baseline from an older commit).
    """
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
    process = subprocess.Popen(
        [sys.executable, "-m", "billing_pipeline.cli", "stripe-emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            if line.startswith("STRIPE_API_BASE="):
                url = line.strip().split("=", 1)[1]
                break
        if url is None:
            raise RuntimeError("the emulator exited before printing its URL")
        _PIDS[url] = process.pid
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def cpu_seconds(url: str) -> float:
    """User + system CPU time the emulator process at `url` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{_PIDS[url]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control(url: str) -> EmulatorControl:
    return EmulatorControl(url, timeout=120.0)


def sdk_client(url: str, key: str = API_KEY, retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(
        key,
        base_addresses={"api": url, "meter_events": url},
        max_network_retries=retries,
    )
