"""Stripe webhook event payloads, as `stripe trigger` produces them.

The pipeline's receiver must accept exactly what Stripe sends, so payloads follow the shapes of
API version 2025-03-31.basil and later (period fields on subscription items, the invoice's
subscription under `parent.subscription_details`). They are generated, not derived from state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from stripe_emulator.ids import new_id
from stripe_emulator.subscription_objects import SUBSCRIPTION_STATUSES

API_VERSION = "2025-03-31.basil"
EVENT_TYPES = (
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
)
_PERIOD_S = 30 * 86400


@dataclass(frozen=True)
class TriggerOptions:
    """What `stripe trigger`-style events are about; ids are generated when not given."""

    customer: str | None = None
    subscription: str | None = None
    organization_id: int | None = None
    status: str | None = None


def _subscription(opts: TriggerOptions, event_type: str, now: int) -> dict[str, Any]:
    subscription_id = opts.subscription or new_id("sub_", 14)
    deleted = event_type == "customer.subscription.deleted"
    status = "canceled" if deleted else (opts.status or "active")
    period_start = now - now % 86400
    items = [
        _subscription_item(subscription_id, lookup_key, period_start, now)
        for lookup_key in ("active_sensors", "temperature_readings")
    ]
    return {
        "id": subscription_id,
        "object": "subscription",
        "application": None,
        "automatic_tax": {"enabled": False, "liability": None},
        "billing_cycle_anchor": period_start,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": now if deleted else None,
        "collection_method": "charge_automatically",
        "created": period_start,
        "currency": "usd",
        "customer": opts.customer or new_id("cus_", 14),
        "default_payment_method": None,
        "description": None,
        "ended_at": now if deleted else None,
        "items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": new_id("in_", 24),
        "livemode": False,
        "metadata": _metadata(opts),
        "pending_update": None,
        "start_date": period_start,
        "status": status,
        "trial_end": None,
        "trial_start": None,
    }


def _subscription_item(
    subscription_id: str, lookup_key: str, period_start: int, now: int
) -> dict[str, Any]:
    return {
        "id": new_id("si_", 14),
        "object": "subscription_item",
        "created": period_start,
        "current_period_end": period_start + _PERIOD_S,
        "current_period_start": period_start,
        "discounts": [],
        "metadata": {},
        "price": {
            "id": new_id("price_", 24),
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": now,
            "currency": "usd",
            "livemode": False,
            "lookup_key": lookup_key,
            "product": new_id("prod_", 14),
            "recurring": {
                "interval": "month",
                "interval_count": 1,
                "meter": new_id("mtr_test_"),
                "usage_type": "metered",
            },
            "type": "recurring",
            "unit_amount": 5,
        },
        "subscription": subscription_id,
        "tax_rates": [],
    }


def _metadata(opts: TriggerOptions) -> dict[str, str]:
    return {} if opts.organization_id is None else {"organization_id": str(opts.organization_id)}


def _checkout_session(opts: TriggerOptions, now: int) -> dict[str, Any]:
    return {
        "id": new_id("cs_test_", 40),
        "object": "checkout.session",
        "amount_subtotal": 0,
        "amount_total": 0,
        "client_reference_id": None if opts.organization_id is None else str(opts.organization_id),
        "created": now,
        "currency": "usd",
        "customer": opts.customer or new_id("cus_", 14),
        "customer_details": {"email": "billing@example.com", "name": None},
        "expires_at": now + 86400,
        "invoice": None,
        "livemode": False,
        "metadata": _metadata(opts),
        "mode": "subscription",
        "payment_status": "paid",
        "status": "complete",
        "subscription": opts.subscription or new_id("sub_", 14),
        "success_url": "https://example.com/billing/success",
    }


def _invoice(opts: TriggerOptions, event_type: str, now: int) -> dict[str, Any]:
    paid = event_type == "invoice.paid"
    amount = 4200
    return {
        "id": new_id("in_", 24),
        "object": "invoice",
        "amount_due": amount,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "attempt_count": 1,
        "attempted": True,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": now,
        "currency": "usd",
        "customer": opts.customer or new_id("cus_", 14),
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None if paid else now + 3 * 86400,
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": _metadata(opts),
                "subscription": opts.subscription or new_id("sub_", 14),
            },
        },
        "period_end": now - now % 86400,
        "period_start": now - now % 86400 - _PERIOD_S,
        "status": "paid" if paid else "open",
        "status_transitions": {
            "finalized_at": now,
            "marked_uncollectible_at": None,
            "paid_at": now if paid else None,
            "voided_at": None,
        },
        "subtotal": amount,
        "total": amount,
    }


def build_event(event_type: str, opts: TriggerOptions, now: int | None = None) -> dict[str, Any]:
    """A v1 snapshot event (`object: "event"`) like the ones `stripe trigger` produces."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unsupported event type {event_type!r}; choose from {EVENT_TYPES}")
    if opts.status is not None and opts.status not in SUBSCRIPTION_STATUSES:
        raise ValueError(f"unknown subscription status {opts.status!r}")
    now = int(time.time()) if now is None else now
    data: dict[str, Any]
    if event_type == "checkout.session.completed":
        data = {"object": _checkout_session(opts, now)}
    elif event_type.startswith("customer.subscription."):
        data = {"object": _subscription(opts, event_type, now)}
        if event_type == "customer.subscription.updated":
            data["previous_attributes"] = {"status": "incomplete"}
    else:
        data = {"object": _invoice(opts, event_type, now)}
    return {
        "id": new_id("evt_", 24),
        "object": "event",
        "api_version": API_VERSION,
        "created": now,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
