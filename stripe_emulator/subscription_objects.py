"""The JSON shape of a new subscription and its items (API reference `subscription`,
`subscription_item`; since basil each item carries its period, and endive adds
`billing_schedules`, `managed_payments` and the item's legacy `plan`)."""

from __future__ import annotations

from typing import Any

from stripe_emulator.errors import invalid
from stripe_emulator.ids import new_id
from stripe_emulator.pagination import int_param
from stripe_emulator.params import merged_metadata

# Every status Stripe documents for a subscription.
SUBSCRIPTION_STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)

# Subscription fields for features the emulator has none of (taxes, Connect, pauses, …).
_EMPTY_FIELDS: dict[str, Any] = dict.fromkeys(
    [
        "application_fee_percent",
        "billing_thresholds",
        "default_source",
        "next_pending_invoice_item_invoice",
        "on_behalf_of",
        "pause_collection",
        "pending_invoice_item_interval",
        "pending_setup_intent",
        "transfer_data",
        "payment_settings",
        "customer_account",
        "managed_payments",
        "presentment_details",
        "status_details",
    ]
) | {
    "billing_schedules": [],
    "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
    "default_tax_rates": [],
    "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
    "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
}


def billing_interval(prices: list[dict[str, Any]]) -> tuple[str, int]:
    """The one interval every price of a subscription shares, as Stripe requires."""
    intervals = {
        (recurring["interval"], recurring["interval_count"])
        for recurring in (price["recurring"] for price in prices)
    }
    if len(intervals) > 1:
        raise invalid(
            "The price specified has a different billing interval than the other prices of "
            "this subscription; all prices must share one interval.",
            param="items",
        )
    [(interval, count)] = intervals
    return interval, count


def plan_of(price: dict[str, Any]) -> dict[str, Any]:
    """The price as the legacy `plan` Stripe still renders on every subscription item."""
    recurring = price["recurring"]
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": False,
        "metadata": dict(price["metadata"]),
        "meter": recurring["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": price["tiers_mode"],
        "transform_usage": None,
        "trial_period_days": recurring["trial_period_days"],
        "usage_type": recurring["usage_type"],
    }


def subscription_item(
    subscription_id: str,
    item: dict[str, Any],
    price: dict[str, Any],
    period: tuple[int, int],
    created: int,
) -> dict[str, Any]:
    start, end = period
    return {
        "id": new_id("si_", 14),
        "object": "subscription_item",
        "billed_until": None,
        "billing_thresholds": None,
        "created": created,
        "current_period_end": end,
        "current_period_start": start,
        "current_trial": None,
        "discounts": [],
        "metadata": merged_metadata({}, item.get("metadata") or {}),
        "plan": plan_of(price),
        "price": dict(price),
        "quantity": int_param(item, "quantity", required=False),
        "subscription": subscription_id,
        "tax_rates": [],
    }


def subscription_object(
    subscription_id: str,
    params: dict[str, Any],
    items: list[tuple[dict[str, Any], dict[str, Any]]],
    period: tuple[int, int],
    anchor: int,
    anchor_config: dict[str, Any] | None,
    test_clock: str | None,
    *,
    created: int,
) -> dict[str, Any]:
    """`payment_behavior=default_incomplete` starts `incomplete`, anything else `active`.

    `period` starts at the subscription's start: `created`, or an earlier backdated start."""
    incomplete = params.get("payment_behavior") == "default_incomplete"
    return {
        **_EMPTY_FIELDS,
        "id": subscription_id,
        "object": "subscription",
        "application": None,
        "billing_cycle_anchor": anchor,
        "billing_cycle_anchor_config": anchor_config,
        "billing_mode": {"type": "classic"},
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": created,
        "currency": items[0][1].get("currency", "usd"),
        "customer": str(params["customer"]),
        "days_until_due": None,
        "default_payment_method": None,
        "description": params.get("description"),
        "discounts": [],
        "ended_at": None,
        "items": {
            "object": "list",
            "data": [
                subscription_item(subscription_id, item, price, period, created)
                for item, price in items
            ],
            "has_more": False,
            "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": merged_metadata({}, params.get("metadata") or {}),
        "pending_update": None,
        "schedule": None,
        "start_date": period[0],
        "status": "incomplete" if incomplete else "active",
        "test_clock": test_clock,
        "trial_end": None,
        "trial_start": None,
    }
