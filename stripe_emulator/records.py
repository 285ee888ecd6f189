"""The stored records that are not plain Stripe JSON objects; they are snapshotted as dicts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MeterEvent:
    """An accepted event; `seq` is arrival order, which `last` may be switched to use."""

    seq: int
    meter: str
    event_name: str
    customer: str
    value: int
    timestamp: int
    identifier: str
    received_at: int
    source: str
    payload: dict[str, str]
    cancelled_at: int | None = None


@dataclass
class ErrorReport:
    """An error Stripe finds after accepting a request and reports later as a thin event."""

    id: str
    code: str
    error_message: str
    meter: str | None
    event_name: str
    customer: str | None
    identifier: str
    created: int
    event_id: str
    source: str


@dataclass
class SavedResponse:
    """A response kept for `Idempotency-Key` replay, with what it was an answer to."""

    method: str
    path: str
    fingerprint: str
    status: int
    body: str
    headers: dict[str, str]
    saved_at: int
