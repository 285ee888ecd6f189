"""Switchable misbehaviour: latency, injected 429/500 answers, dropped connections, rate limit.

These live apart from the Stripe state because they model the network and Stripe's load
shedding, not billing rules; they use real (monotonic) time, since a rate limit is about how
fast a client really sends, whatever the emulator clock says.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FaultConfig:
    latency_ms: int = 0
    error_429_rate: float = 0.0
    error_500_rate: float = 0.0
    drop_rate: float = 0.0
    seed: int | None = None
    # The `Stripe-Should-Retry` header on injected 500s: absent (None), "true" or "false".
    # Stripe sets it when it knows whether a retry can succeed (docs.stripe.com/error-low-level,
    # "Retry-able errors"); clients that honour it stop or go on accordingly.
    should_retry: bool | None = None

    def __post_init__(self) -> None:
        for name in ("error_429_rate", "error_500_rate", "drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")


class Faults:
    """Thread-safe; a seed makes a fault sequence reproducible for a single-threaded client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._random = random.Random()
        self._rate: float | None = None
        self._tokens = 0.0
        self._refilled_at = time.monotonic()

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
            self._random = random.Random(config.seed)

    def config(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self._config) | {"requests_per_second": self._rate}

    def set_rate_limit(self, requests_per_second: float | None) -> None:
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive or None")
        with self._lock:
            self._rate = requests_per_second
            self._tokens = max(1.0, requests_per_second or 0.0)
            self._refilled_at = time.monotonic()

    def reset(self) -> None:
        self.configure(FaultConfig())
        self.set_rate_limit(None)

    def allow_request(self) -> bool:
        """Token bucket holding at most one second's worth of requests (at least one)."""
        with self._lock:
            if self._rate is None:
                return True
            now = time.monotonic()
            capacity = max(1.0, self._rate)
            self._tokens = min(capacity, self._tokens + (now - self._refilled_at) * self._rate)
            self._refilled_at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True

    def roll(self, kind: str) -> bool:
        """Whether this request suffers the fault `kind` (error_429, error_500 or drop)."""
        with self._lock:
            rate: float = getattr(self._config, f"{kind}_rate")
            return rate > 0 and self._random.random() < rate

    def should_retry_header(self) -> dict[str, str]:
        """The extra headers of an injected 500."""
        with self._lock:
            flag = self._config.should_retry
        return {} if flag is None else {"Stripe-Should-Retry": "true" if flag else "false"}

    def latency_seconds(self) -> float:
        with self._lock:
            return self._config.latency_ms / 1000.0

    def delay(self) -> None:
        """Wait the configured latency; not at all without one (even `sleep(0)` hands the
        interpreter lock to another thread, which costs a request its turn)."""
        latency = self.latency_seconds()
        if latency > 0:
            time.sleep(latency)
