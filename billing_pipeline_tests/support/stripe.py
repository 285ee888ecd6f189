"""Stripe helpers: the project's emulator over real HTTP, reached by the official SDK."""

from __future__ import annotations

import argparse
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import stripe

from billing_pipeline.stripe_client import RetryRule, StripeBilling
from stripe_emulator.cli import register

TEST_KEY = "sk_test_billing_pipeline"
# Retries that keep fault-injection tests quick while still backing off.
FAST_RETRY = RetryRule(attempts=8, base_seconds=0.01, cap_seconds=0.2)

# 2025-06-15T12:00:00Z: the emulator's own tests pin its clock so day boundaries are predictable.
NOON = 1_749_988_800
MIDNIGHT = NOON - 12 * 3600
DAY = 86400


def make_client(url: str, key: str = "sk_test_emulator", retries: int = 0) -> stripe.StripeClient:
    """A plain SDK client on the emulator, for tests of the emulator itself."""
    return stripe.StripeClient(
        key, base_addresses={"api": url, "meter_events": url}, max_network_retries=retries
    )


def new_customer(stripe_billing: StripeBilling, name: str) -> str:
    customer_id: str = stripe_billing.client.v1.customers.create({"name": name}).id
    return customer_id


def run_emulator_cli(argv: list[str]) -> int:
    """Run `stripe-emulator ...` as the project's CLI does, in this process."""
    parser = argparse.ArgumentParser(prog="billing-pipeline")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]


@dataclass
class WebhookRecorder:
    """A tiny webhook endpoint recording what it gets; answers 200."""

    url: str = ""
    received: list[Delivery] = field(default_factory=list)

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[Delivery]:
        """Wait until `count` deliveries arrived (or fail after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.received) >= count, f"expected {count} deliveries, got {self.received}"
        return self.received


@contextmanager
def recording_endpoint() -> Iterator[WebhookRecorder]:
    """Serve a `WebhookRecorder` over real HTTP on a free port."""
    state = WebhookRecorder()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(Delivery(body, dict(self.headers.items())))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
