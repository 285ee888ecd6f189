"""One emulator per test module, reset before every test, reached only through the real SDK."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import stripe

from stripe_emulator import EmulatorControl, StripeEmulator

# 2025-06-15T12:00:00Z: tests pin the emulator clock so day boundaries are predictable.
NOON = 1_749_988_800
MIDNIGHT = NOON - 12 * 3600
DAY = 86400


@pytest.fixture(scope="module")
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(port=0) as running:
        yield running


@pytest.fixture(autouse=True)
def control(emulator: StripeEmulator) -> EmulatorControl:
    emulator.control.reset()
    emulator.control.set_clock(NOON)
    return emulator.control


def make_client(url: str, key: str = "sk_test_emulator", retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(
        key, base_addresses={"api": url, "meter_events": url}, max_network_retries=retries
    )


@pytest.fixture
def client(emulator: StripeEmulator) -> stripe.StripeClient:
    return make_client(emulator.url)


@pytest.fixture
def customer(client: stripe.StripeClient) -> str:
    return client.v1.customers.create({"email": "org1@example.com"}).id


@pytest.fixture
def make_meter(client: stripe.StripeClient) -> Callable[..., Any]:
    def create(event_name: str, formula: str = "sum", **extra: Any) -> Any:
        params: Any = {
            "display_name": event_name.replace("_", " ").title(),
            "event_name": event_name,
            "default_aggregation": {"formula": formula},
            **extra,
        }
        return client.v1.billing.meters.create(params)

    return create


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]


@dataclass
class Receiver:
    """A tiny webhook receiver recording what it gets; answers 200."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        for _ in range(int(timeout * 20)):
            if len(self.received) >= count:
                break
            self.arrived.wait(0.05)
        assert len(self.received) >= count, f"expected {count} deliveries, got {self.received}"
        return self.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(Received(body, dict(self.headers.items())))
            state.arrived.set()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    yield state
    server.shutdown()
    server.server_close()
