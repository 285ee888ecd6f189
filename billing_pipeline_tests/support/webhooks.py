"""Realistic Stripe event payloads, signatures made with the stripe SDK, and a real HTTP server.

Payloads follow API version basil (periods on subscription items, the invoice's subscription
under `parent.subscription_details`), which is what the handlers must read.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import requests
import stripe
from flask import Flask
from sqlalchemy import Engine, text
from werkzeug.serving import make_server

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.webhooks.events import parse_snapshot_event
from billing_pipeline.webhooks.inbox import store_event

SECRET = "whsec_test_current_0123456789abcdef"
OLD_SECRET = "whsec_test_previous_fedcba9876543210"
API_VERSION = "2025-03-31.basil"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def sign(body: str, secret: str = SECRET, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header exactly as Stripe computes it."""
    header: str = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
    return header


def event(
    event_type: str, obj: dict[str, Any], created: int, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def checkout_completed(
    organization: int | str | None, customer: str, subscription: str, created: int, **extra: Any
) -> dict[str, Any]:
    session = {
        "id": f"cs_test_{uuid.uuid4().hex[:16]}",
        "object": "checkout.session",
        "client_reference_id": None if organization is None else str(organization),
        "customer": customer,
        "subscription": subscription,
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "metadata": {},
        **extra,
    }
    return event("checkout.session.completed", session, created)


def subscription_event(
    event_type: str,
    subscription: str,
    customer: str,
    created: int,
    *,
    status: str = "active",
    start_date: int = T0,
    period: tuple[int, int] = (T0, T0 + 31 * 86400),
    cancel_at_period_end: bool = False,
    cancel_at: int | None = None,
    canceled_at: int | None = None,
    ended_at: int | None = None,
    metadata: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A subscription event; `extra` sets further fields of the subscription (`trial_end`, …)."""
    item = {
        "id": f"si_{uuid.uuid4().hex[:14]}",
        "object": "subscription_item",
        "current_period_start": period[0],
        "current_period_end": period[1],
        "price": {"id": "price_sensors", "recurring": {"usage_type": "metered"}},
    }
    obj = {
        "id": subscription,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "start_date": start_date,
        "created": start_date,
        "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": cancel_at,
        "canceled_at": canceled_at,
        "ended_at": ended_at,
        "items": {"object": "list", "data": [item], "has_more": False},
        "latest_invoice": None,
        "metadata": metadata or {},
        **extra,
    }
    return event(event_type, obj, created)


def priced_items(prices: list[Any], period: tuple[int, int]) -> dict[str, Any]:
    """A subscription's `items` list with one item per Stripe price (an SDK object or a dict),
    as Stripe embeds it: the whole price, `recurring.meter` included."""
    data = [
        {
            "id": f"si_{uuid.uuid4().hex[:14]}",
            "object": "subscription_item",
            "current_period_start": period[0],
            "current_period_end": period[1],
            "price": json.loads(str(price)) if not isinstance(price, dict) else price,
        }
        for price in prices
    ]
    return {"object": "list", "data": data, "has_more": False}


def invoice_event(
    event_type: str, invoice: str, subscription: str, customer: str, created: int
) -> dict[str, Any]:
    obj = {
        "id": invoice,
        "object": "invoice",
        "customer": customer,
        "status": "paid" if event_type == "invoice.paid" else "open",
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": subscription, "metadata": {}},
            "quote_details": None,
        },
    }
    return event(event_type, obj, created)


def finalized_invoice_event(
    invoice: str,
    subscription: str,
    customer: str,
    created: int,
    lines: list[tuple[str, int, int, int]],
) -> dict[str, Any]:
    """`invoice.finalized` with one line per (price, quantity, period start, period end)."""
    payload = invoice_event("invoice.finalized", invoice, subscription, customer, created)
    payload["data"]["object"] |= {
        "status_transitions": {"finalized_at": created},
        "billing_reason": "subscription_cycle",
        "lines": _invoice_lines(lines),
    }
    return payload


def draft_invoice_event(
    invoice: str,
    subscription: str,
    customer: str,
    created: int,
    finalizes_at: int,
    lines: list[tuple[str, int, int, int]],
) -> dict[str, Any]:
    """`invoice.created`: a draft for the period of its lines (price, quantity, period start,
    period end), which Stripe finalizes at `finalizes_at`."""
    payload = invoice_event("invoice.created", invoice, subscription, customer, created)
    payload["data"]["object"] |= {
        "status": "draft",
        "status_transitions": {"finalized_at": None},
        "automatically_finalizes_at": finalizes_at,
        "billing_reason": "subscription_cycle",
        "period_start": lines[0][2],
        "period_end": lines[0][3],
        "lines": _invoice_lines(lines),
    }
    return payload


def _invoice_lines(lines: list[tuple[str, int, int, int]]) -> dict[str, Any]:
    return {
        "object": "list",
        "has_more": False,
        "data": [
            {
                "id": f"il_{uuid.uuid4().hex[:14]}",
                "object": "line_item",
                "quantity": quantity,
                "period": {"start": start, "end": end},
                "pricing": {"type": "price_details", "price_details": {"price": price}},
            }
            for price, quantity, start, end in lines
        ],
    }


def dumps(payload: dict[str, Any]) -> str:
    """Stripe's own formatting (indented), so tests never depend on re-serialisation."""
    return json.dumps(payload, indent=2)


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve the app over real HTTP on a free port; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def inbox_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM billing.webhook_inbox ORDER BY id"))
        return [dict(row) for row in rows.mappings()]


def create_organization(engine: Engine, name: str = "Acme Cold Chain") -> int:
    with engine.begin() as connection:
        organization_id: int = connection.execute(
            text("INSERT INTO organizations (name) VALUES (:name) RETURNING id"), {"name": name}
        ).scalar_one()
    return organization_id


def subscription_row(engine: Engine, stripe_subscription_id: str) -> dict[str, Any]:
    with engine.connect() as connection:
        row = (
            connection.execute(
                text("SELECT * FROM subscriptions WHERE stripe_subscription_id = :sub"),
                {"sub": stripe_subscription_id},
            )
            .mappings()
            .one()
        )
        return dict(row)


def store_events(engine: Engine, payloads: list[dict[str, Any]]) -> None:
    """Put events in the inbox the way the receiver does, for tests of what comes after it."""
    for payload in payloads:
        store_event(engine, parse_snapshot_event(dumps(payload)))


def end_backoffs(engine: Engine) -> int:
    """Move the inbox's time instead of sleeping: every failed event is due now. Returns how
    many were waiting."""
    with engine.begin() as connection:
        moved: int = connection.execute(
            text(
                "UPDATE billing.webhook_inbox SET next_attempt_at = now() "
                "WHERE status = :failed AND next_attempt_at > now()"
            ),
            {"failed": InboxStatus.FAILED},
        ).rowcount
    return moved


def backoff_left(engine: Engine, event_id: str) -> timedelta:
    """How long the event still waits before its next attempt (negative: overdue)."""
    with engine.connect() as connection:
        left: timedelta = connection.execute(
            text("SELECT next_attempt_at - now() FROM billing.webhook_inbox WHERE event_id = :id"),
            {"id": event_id},
        ).scalar_one()
    return left


def post_event(receiver_url: str, payload: dict[str, Any], secret: str = SECRET) -> int:
    """Deliver one event to the receiver over HTTP, signed as Stripe signs; the status code."""
    body = dumps(payload)
    response = requests.post(
        f"{receiver_url}/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"},
        timeout=10,
    )
    return response.status_code
