"""Stripe's webhook signature scheme and delivery of signed events (snapshot and thin).

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
from collections.abc import Callable
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


def thin_notification(full_event: dict[str, Any]) -> dict[str, Any]:
    """What Stripe sends an event destination for a thin v2 event: no data, only references."""
    return {
        key: full_event[key]
        for key in ("id", "object", "type", "created", "livemode", "related_object")
        if key in full_event
    }


DeliveryCallback = Callable[[str, int | str], None]


class WebhookDeliverer:
    """Sends signed events to their endpoint from one background thread, in production order.

    A background thread keeps API responses fast and lets a receiver call back into the
    emulator (to fetch a full event or a subscription) without deadlocking. Each outcome is
    recorded and handed to the event's callback (the event list keeps `pending_webhooks`);
    failed deliveries are not retried: `GET /v1/events` is how a receiver finds them.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.deliveries: list[dict[str, Any]] = []
        self._queue: queue.Queue[tuple[str, dict[str, Any], DeliveryCallback | None] | None] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._run, name="emulator-webhooks", daemon=True)
        self._thread.start()

    def enqueue(
        self, url: str, payload: dict[str, Any], on_result: DeliveryCallback | None = None
    ) -> None:
        """Queue `payload` (sent as it is now: later changes to the object are not sent)."""
        self._queue.put((url, json.loads(json.dumps(payload)), on_result))

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            url, payload, on_result = item
            try:
                status: int | str = deliver(url, self.secret, payload, timeout=5.0)
            except Exception as exc:  # a dead receiver must not kill the delivery thread
                status = f"error: {type(exc).__name__}"
            # The outcome reaches the event first: whoever sees the delivery listed then also
            # sees its `pending_webhooks` updated.
            if on_result is not None:
                on_result(payload["id"], status)
            self.deliveries.append({"event_id": payload["id"], "url": url, "status": status})
