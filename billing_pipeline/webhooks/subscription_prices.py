"""Which prices, and so which Stripe meters, a subscription bills, as its newest event lists them.

Stripe meters aggregate per customer: two subscriptions of one customer with prices on the same
meter each bill the customer's whole usage on that meter. Attribution refuses to report such
usage (`stripe_reporting/attribution.py`) and the check `subscriptions_sharing_a_meter` names
it, so the flow keeps each subscription's prices here: the price, the Stripe meter of a metered
price (`items.data[].price.recurring.meter`) and its unit amount, for the money at stake.

The prices are replaced as a whole by the event that writes the subscription's state (the newest
one, or Stripe's current subscription at a tie); a stale event changes nothing. Only the items
the object lists are read (an item list cut short, `has_more`, is not paged through).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from billing_pipeline.webhooks.payloads import id_of


def _prices(subscription: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = subscription.get("items")
    item_list = items.get("data") if isinstance(items, Mapping) else None
    prices: dict[str, dict[str, Any]] = {}
    for item in item_list if isinstance(item_list, list) else []:
        price = item.get("price") if isinstance(item, Mapping) else None
        if not isinstance(price, Mapping) or id_of(price.get("id")) is None:
            continue
        recurring = price.get("recurring")
        meter = recurring.get("meter") if isinstance(recurring, Mapping) else None
        amount = price.get("unit_amount_decimal", price.get("unit_amount"))
        prices[str(price["id"])] = {
            "price": str(price["id"]),
            "meter": id_of(meter),
            "amount": None if amount is None else str(amount),
            "currency": price.get("currency"),
        }
    return list(prices.values())


def record_prices(
    connection: Connection,
    subscription_id: str,
    subscription: Mapping[str, Any],
    created: datetime,
) -> None:
    """Replace the subscription's prices with the snapshot's."""
    connection.execute(
        text("DELETE FROM billing.subscription_prices WHERE stripe_subscription_id = :sub"),
        {"sub": subscription_id},
    )
    rows = [{"sub": subscription_id, "created": created, **p} for p in _prices(subscription)]
    if rows:
        connection.execute(
            text(
                """
                INSERT INTO billing.subscription_prices
                    (stripe_subscription_id, stripe_price_id, stripe_meter_id,
                     unit_amount_decimal, currency, event_created)
                VALUES (:sub, :price, :meter, CAST(:amount AS numeric), :currency, :created)
                """
            ),
            rows,
        )
