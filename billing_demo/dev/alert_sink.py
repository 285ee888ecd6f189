"""The demo's alert sink: an HTTP endpoint that prints the alerts the pipeline sends it.

`billing-pipeline dev` starts it when no alert sink is configured and points
BILLING_ALERTS_WEBHOOK_URL at it, so a failed run or check shows up in the terminal as it would
in a team's channel. It takes the generic JSON webhook and Slack's payload alike (both carry
`text`), keeps what it received, and answers 200. It runs in a thread of the supervisor, like
the Stripe emulator, and stops with it.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from typing import Any, Self

Received = tuple[str, dict[str, Any]]  # (path, JSON body)


def print_alert(path: str, body: dict[str, Any]) -> None:
    text = str(body.get("text", body))
    print("\n".join(f"[alert] {line}" for line in text.splitlines()), flush=True)


class AlertSink:
    """A threaded HTTP server on `host:port` (0: any free port) recording each POSTed alert."""

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        on_alert: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._on_alert = on_alert
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = sink.answer(self.path)
                if status == 200:
                    body = json.loads(raw or b"{}")
                    with sink._lock:
                        sink.received.append((self.path, body))
                    if sink._on_alert is not None:
                        sink._on_alert(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"unavailable")

            def log_message(self, *args: Any) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(self, path: str) -> int:
        """The status to answer a POST to `path` with: the demo takes everything."""
        return 200

    def url(self, path: str = "/alerts") -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
