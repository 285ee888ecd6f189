"""Stripe's webhook signature scheme and delivery of signed events.

Signatures are computed the way Stripe computes them: HMAC-SHA256 keyed by the whole `whsec_`
secret over `f"{t}.{raw_body}"`, so the pipeline's receiver verifies them with the SDK.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import secrets
import threading
import time
from typing import Any


def generate_webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


def signature_header(raw_body: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` value for `raw_body`, as Stripe computes it."""
    signed = f"{timestamp}.".encode() + raw_body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def deliver(url: str, secret: str, payload: dict[str, Any], timeout: float = 10.0) -> int:
    """POST one signed event; returns the receiver's status code.

    The signature timestamp is real time, not the emulator clock: receivers check it against
    their own clock with a 300 s tolerance.
    """
    import requests

    raw = json.dumps(payload, indent=2).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "Stripe-Signature": signature_header(raw, secret, int(time.time())),
    }
    return requests.post(url, data=raw, headers=headers, timeout=timeout).status_code


class ThinEventDeliverer:
    """Sends thin v2 event notifications to the configured endpoint from a background thread.

    A background thread keeps API responses fast and lets a receiver call back into the
    emulator (to fetch the full event) without deadlocking. Failed deliveries are recorded,
    not retried: tests list error reports through the control plane instead.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.deliveries: list[dict[str, Any]] = []
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="thin-event-webhooks", daemon=True)
        self._thread.start()

    def enqueue(self, url: str, full_event: dict[str, Any]) -> None:
        notification: dict[str, Any] = {
            key: full_event[key]
            for key in ("id", "object", "type", "created", "livemode", "related_object")
            if key in full_event
        }
        self._queue.put((url, notification))

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            url, notification = item
            try:
                status: int | str = deliver(url, self.secret, notification, timeout=5.0)
            except Exception as exc:  # a dead receiver must not kill the delivery thread
                status = f"error: {type(exc).__name__}"
            self.deliveries.append({"event_id": notification["id"], "url": url, "status": status})
