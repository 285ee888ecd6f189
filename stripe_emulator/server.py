"""`StripeEmulator`: runs the app on a werkzeug server in a background thread.

Tests start it in-process on a free port; the CLI starts the same object, so both exercise one
code path. With a state file, a snapshot is written when something changed (every few seconds
and at shutdown) so the demo keeps its customers, meters and events across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from stripe_emulator.app import create_app
from stripe_emulator.control import EmulatorControl
from stripe_emulator.faults import Faults
from stripe_emulator.response_shapes import warm_up_shapes
from stripe_emulator.runtime import Runtime
from stripe_emulator.state import EmulatorState
from stripe_emulator.store import LastMode, NegativeValues, NewerMode, Settings
from stripe_emulator.webhooks import WebhookDeliverer, generate_webhook_secret

logger = logging.getLogger(__name__)
SNAPSHOT_INTERVAL_S = 2.0
# How often billing that falls due with no request around (a period ends at night) is run.
BILLING_TICK_S = 1.0


class _QuietHandler(WSGIRequestHandler):
    """Per-request access lines would drown test output; errors still reach the log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class StripeEmulator:
    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        webhook_secret: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        last_mode: LastMode = "timestamp",
        newer_mode: NewerMode = "arrival",
        check_responses: bool = False,
        negative_values: NegativeValues = "allowed",
    ) -> None:
        """`last_mode` and `newer_mode` are the unconfirmed Stripe orderings (see README); they
        are where `reset()` returns to, and they override what a state file saved.
        `check_responses` (tests) turns every response that departs from Stripe's published
        shape into a 500 (response_shapes.py)."""
        self.check_responses = check_responses
        self.host = host
        self.port = port
        self.webhook_secret = webhook_secret or generate_webhook_secret()
        self.state_file = Path(state_file) if state_file is not None else None
        self._modes = {
            "last_mode": last_mode,
            "newer_mode": newer_mode,
            "negative_values": negative_values,
        }
        self.state = EmulatorState(
            Settings(last_mode=last_mode, newer_mode=newer_mode, negative_values=negative_values)
        )
        self.faults = Faults()
        self._server: BaseWSGIServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._runtime: Runtime | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return f"http://{self.host}:{self._server.server_port}"

    @property
    def control(self) -> EmulatorControl:
        return EmulatorControl(self.url)

    def start(self) -> StripeEmulator:
        if self.check_responses:
            # Reading the SDK's types takes a second: not inside a test's first request.
            warm_up_shapes()
        if self.state_file is not None and self.state_file.exists():
            snapshot = json.loads(self.state_file.read_text())
            snapshot["settings"].update(self._modes)
            self.state.restore(snapshot)
        self._runtime = Runtime(
            state=self.state,
            faults=self.faults,
            deliverer=WebhookDeliverer(self.webhook_secret),
            check_responses=self.check_responses,
        )
        self._server = make_server(
            self.host,
            self.port,
            create_app(self._runtime),
            threaded=True,
            request_handler=_QuietHandler,
        )
        self._stopping.clear()
        serve = threading.Thread(
            target=self._server.serve_forever, name="stripe-emulator", daemon=True
        )
        billing = threading.Thread(
            target=self._billing_loop, name="stripe-emulator-billing", daemon=True
        )
        self._threads = [serve, billing]
        if self.state_file is not None:
            self._threads.append(
                threading.Thread(
                    target=self._snapshot_loop, name="stripe-emulator-snapshot", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._runtime is not None:
            self._runtime.deliverer.stop()
        self._write_snapshot()
        self._server = None

    def __enter__(self) -> StripeEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _billing_loop(self) -> None:
        """Stripe ends periods on its own: do so on the emulator clock, and deliver."""
        while not self._stopping.wait(BILLING_TICK_S):
            if self._runtime is not None:
                self.state.billing.run_due()
                self._runtime.hand_over_events()

    def _snapshot_loop(self) -> None:
        while not self._stopping.wait(SNAPSHOT_INTERVAL_S):
            if self.state.dirty:
                self._write_snapshot()

    def _write_snapshot(self) -> None:
        """Write to a temp file and rename, so a crash never leaves half a snapshot."""
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        snapshot = json.dumps(self.state.snapshot())
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=".stripe-emulator-")
        with os.fdopen(fd, "w") as handle:
            handle.write(snapshot)
        os.replace(tmp, self.state_file)
