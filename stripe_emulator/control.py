"""`EmulatorControl`: a small Python client for the emulator's `/_emulator` control plane."""

from __future__ import annotations

from typing import Any

import requests


class EmulatorControl:
    """Drives one emulator by URL, so it works the same in-process and across processes."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._session.request(
            method, f"{self.base_url}/_emulator{path}", json=body, timeout=self.timeout
        )
        if response.status_code >= 400:
            raise ValueError(f"emulator control {path} failed: {response.text}")
        return response.json()

    def now(self) -> int:
        return int(self._call("GET", "/clock")["now"])

    def advance_clock(self, seconds: float) -> int:
        """Move the emulator clock; billing due on the way runs for customers without a test
        clock (see `set_clock`)."""
        return int(self._call("POST", "/clock/advance", {"seconds": seconds})["now"])

    def set_clock(self, unix_ts: float) -> int:
        """Move the emulator clock; the period ends, cancellations and invoice finalizations
        that fell due on the way run in order, for customers without a test clock."""
        return int(self._call("POST", "/clock", {"now": unix_ts})["now"])

    def set_invoice_grace_period(self, seconds: int) -> int:
        """The account's invoice finalization grace period (Stripe: 1 h by default, up to
        72 h): drafts made from now on are finalized that long after their period ends."""
        return int(self._call("POST", "/invoice_grace_period", {"seconds": seconds})["seconds"])

    def set_faults(
        self,
        latency_ms: int = 0,
        error_429_rate: float = 0.0,
        error_500_rate: float = 0.0,
        drop_rate: float = 0.0,
        seed: int | None = None,
        should_retry: bool | None = None,
    ) -> dict[str, Any]:
        """Replace the whole fault configuration; calling with no arguments clears faults.
        `should_retry` sets `Stripe-Should-Retry` on the injected 500s (None: no header)."""
        body = {
            "latency_ms": latency_ms,
            "error_429_rate": error_429_rate,
            "error_500_rate": error_500_rate,
            "drop_rate": drop_rate,
            "seed": seed,
            "should_retry": should_retry,
        }
        result: dict[str, Any] = self._call("POST", "/faults", body)
        return result

    def set_rate_limit(self, requests_per_second: float | None) -> None:
        self._call("POST", "/rate_limit", {"requests_per_second": requests_per_second})

    def set_last_mode(self, mode: str) -> None:
        """ "timestamp" (latest event timestamp wins) or "arrival" (latest received wins)."""
        self._call("POST", "/last_mode", {"mode": mode})

    def set_negative_values(self, mode: str) -> None:
        """`allowed` or `refused`: whether meter event values may be negative."""
        self._call("POST", "/negative_values", {"mode": mode})

    def set_newer_mode(self, mode: str) -> None:
        """Pre-aggregated meters keep each window's newest event: "arrival" (latest received,
        the default) or "timestamp" (latest timestamp, ties broken by arrival)."""
        self._call("POST", "/newer_mode", {"mode": mode})

    def set_unknown_customer_mode(self, mode: str) -> None:
        """ "async" (accept, then an error report, like Stripe) or "reject" (a synchronous 400)."""
        self._call("POST", "/unknown_customer_mode", {"mode": mode})

    def set_webhook_endpoint(self, url: str | None) -> None:
        """Where snapshot events (`customer.subscription.*`) are delivered; None: nowhere."""
        self._call("POST", "/webhook_endpoint", {"url": url})

    def set_event_destination(self, url: str | None) -> None:
        """Where thin events (meter error reports) are delivered; None: nowhere."""
        self._call("POST", "/event_destination", {"url": url})

    def settle_subscription_payment(
        self, subscription_id: str, succeeded: bool = True
    ) -> dict[str, Any]:
        """Stand in for a late or failed payment (emulated invoices are paid at once): `active`
        on success, `past_due` on failure; emits `customer.subscription.updated` when the
        status changes."""
        result: dict[str, Any] = self._call(
            "POST", f"/subscriptions/{subscription_id}/payment", {"succeeded": succeeded}
        )
        return result

    def meter_events(self, after: int = 0) -> list[dict[str, Any]]:
        """Stored meter events, oldest first; `after` keeps those with a larger `seq`."""
        result: list[dict[str, Any]] = self._call("GET", f"/meter_events?after={after}")
        return result

    def error_reports(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/error_reports")
        return result

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/webhook_deliveries")
        return result

    def request_count(self) -> dict[str, int]:
        """Answered API requests by status code ("200", "429", …) plus "dropped"."""
        result: dict[str, int] = self._call("GET", "/request_count")
        return result

    def endpoint_counts(self) -> dict[str, int]:
        """Answered API requests by route name (e.g. `list_event_summaries`), dropped included."""
        result: dict[str, int] = self._call("GET", "/endpoint_counts")
        return result

    def contract(self) -> dict[str, Any]:
        """Contract mode: how many answers and webhook events were checked against Stripe's
        published shapes (by view or event type), and every departure since the last reset."""
        result: dict[str, Any] = self._call("GET", "/contract")
        return result

    def reset(self) -> None:
        """Forget all objects, events and settings, and return the clock to real time."""
        self._call("POST", "/reset")
