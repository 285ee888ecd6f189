"""The emulator's own Flask app served by gunicorn, for benchmarks only.

    python -m bench.emulator_gunicorn [--threads 8]      # prints STRIPE_API_BASE=... like the CLI

The emulator normally runs under werkzeug's threaded development server (`StripeEmulator`, as
the tests and the CLI start it). werkzeug 3 closes the connection after every response, so each
request costs a TCP connection and a new server thread, which is most of what a one-event v1
call costs the emulator. Here the same app (`create_app` with the same `Runtime` and billing
loop) runs in one gunicorn worker process (its state is in memory, so one process), with the
`gthread` worker keeping connections alive. The rules are the app's, unchanged; one thing is
missing: the `drop` fault, which closes werkzeug's socket (`werkzeug.socket`), does nothing
here, so benchmarks served this way inject 5xx and 429 only.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

from gunicorn.app.base import BaseApplication

from stripe_emulator.app import create_app
from stripe_emulator.runtime import Runtime
from stripe_emulator.server import StripeEmulator
from stripe_emulator.webhooks import WebhookDeliverer


def build_app() -> Any:
    """The app and background billing of a `StripeEmulator`, without its werkzeug server."""
    emulator = StripeEmulator()
    runtime = Runtime(
        state=emulator.state,
        faults=emulator.faults,
        deliverer=WebhookDeliverer(emulator.webhook_secret),
    )
    emulator._runtime = runtime
    threading.Thread(target=emulator._billing_loop, name="billing", daemon=True).start()
    return create_app(runtime)


class EmulatorApplication(BaseApplication):
    def __init__(self, threads: int) -> None:
        self.threads = threads
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": "127.0.0.1:0",
            "workers": 1,
            "worker_class": "gthread",
            "threads": self.threads,
            "keepalive": 120,
            "timeout": 300,
            "graceful_timeout": 5,
            "accesslog": None,
            "loglevel": "warning",
            "when_ready": _announce,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Called in the worker process, so the state and its billing thread live there.
        return build_app()


def _announce(server: Any) -> None:
    """Print the bound address the way `billing-pipeline stripe-emulator` does."""
    host, port = server.LISTENERS[0].sock.getsockname()[:2]
    print(f"STRIPE_API_BASE=http://{host}:{port}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    EmulatorApplication(parser.parse_args().threads).run()


if __name__ == "__main__":
    main()
