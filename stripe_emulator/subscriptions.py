"""`/v1/subscriptions`: a subscription's lifecycle, each change announced as an event.

Objects follow Stripe's API version basil: the billing period lives on each item
(`items.data[].current_period_start|end`), prices are referenced by id. Every change emits
`customer.subscription.created|updated|deleted` (with `previous_attributes` on updates), so
`GET /v1/subscriptions/{id}` and the event list always agree. Stripe never reactivates a
canceled subscription; neither does this.

Not emulated yet: price objects, invoices, trials, billing cycle anchors, test clocks and
period roll-over (a period ends only when the clock is moved and something changes); the object
shape leaves room for them.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Any

from stripe_emulator.customers import Customers
from stripe_emulator.errors import StripeAPIError, existing, invalid, missing_param
from stripe_emulator.events import Events
from stripe_emulator.ids import new_id
from stripe_emulator.pagination import int_param, paginate
from stripe_emulator.store import Store

STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)
_CREATE_PARAMS = {"customer", "items", "metadata", "payment_behavior", "description", "expand"}
_UPDATE_PARAMS = {"metadata", "cancel_at_period_end", "cancel_at", "description", "expand"}
_CANCELED_UPDATE_PARAMS = {"metadata", "expand"}
_CANCEL_PARAMS = {"invoice_now", "prorate", "expand"}


def add_month(timestamp: int) -> int:
    """One calendar month later, the day clamped to the month's length (Jan 31 → Feb 28)."""
    start = datetime.fromtimestamp(timestamp, UTC)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def _boolean(params: dict[str, Any], name: str) -> bool:
    raw = params[name]
    if raw not in ("true", "false", True, False):
        raise invalid(f"Invalid boolean: {raw}", param=name)
    return raw in ("true", True)


def _unknown(params: dict[str, Any], allowed: set[str]) -> None:
    for name in params:
        if name not in allowed:
            raise invalid(f"Received unknown parameter: {name}", param=name)


def _merged_metadata(current: dict[str, str], update: Any) -> dict[str, str]:
    """Stripe merges metadata keys; an empty value deletes its key, an empty string all keys."""
    if update == "":
        return {}
    if not isinstance(update, dict):
        raise invalid("Invalid object", param="metadata")
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged


class Subscriptions:
    def __init__(self, store: Store, customers: Customers, events: Events) -> None:
        self._store = store
        self._customers = customers
        self._events = events

    def create(self, params: dict[str, Any], request: dict[str, str | None]) -> dict[str, Any]:
        """`payment_behavior=default_incomplete` starts `incomplete` until a payment settles
        (control plane); otherwise the first payment is taken to succeed at once: `active`."""
        _unknown(params, _CREATE_PARAMS)
        customer = params.get("customer")
        if not customer:
            raise missing_param("customer")
        if not self._customers.exists(str(customer)):
            raise invalid(
                f"No such customer: '{customer}'", param="customer", code="resource_missing"
            )
        items = params.get("items")
        if not isinstance(items, list) or not items:
            raise missing_param("items")
        store = self._store
        with store.lock:
            now = store.clock.now()
            subscription_id = new_id("sub_", 24)
            period_end = add_month(now)
            incomplete = params.get("payment_behavior") == "default_incomplete"
            subscription: dict[str, Any] = {
                "id": subscription_id,
                "object": "subscription",
                "application": None,
                "billing_cycle_anchor": now,
                "billing_mode": {"type": "classic"},
                "cancel_at": None,
                "cancel_at_period_end": False,
                "canceled_at": None,
                "cancellation_details": {"comment": None, "feedback": None, "reason": None},
                "collection_method": "charge_automatically",
                "created": now,
                "currency": "usd",
                "customer": str(customer),
                "days_until_due": None,
                "default_payment_method": None,
                "description": params.get("description"),
                "discounts": [],
                "ended_at": None,
                "items": {
                    "object": "list",
                    "data": [
                        self._item(subscription_id, item, index, now, period_end)
                        for index, item in enumerate(items)
                    ],
                    "has_more": False,
                    "total_count": len(items),
                    "url": f"/v1/subscription_items?subscription={subscription_id}",
                },
                "latest_invoice": None,
                "livemode": False,
                "metadata": _merged_metadata({}, params.get("metadata") or {}),
                "pending_update": None,
                "schedule": None,
                "start_date": now,
                "status": "incomplete" if incomplete else "active",
                "test_clock": None,
                "trial_end": None,
                "trial_start": None,
            }
            store.data.subscriptions[subscription_id] = subscription
            store.dirty = True
            self._events.emit("customer.subscription.created", subscription, request=request)
            return subscription

    @staticmethod
    def _item(subscription_id: str, item: Any, index: int, start: int, end: int) -> dict[str, Any]:
        if not isinstance(item, dict) or not item.get("price"):
            raise missing_param(f"items[{index}][price]")
        quantity = int_param(item, "quantity", required=False)
        return {
            "id": new_id("si_", 14),
            "object": "subscription_item",
            "created": start,
            "current_period_end": end,
            "current_period_start": start,
            "discounts": [],
            "metadata": _merged_metadata({}, item.get("metadata") or {}),
            "price": {"id": str(item["price"]), "object": "price"},
            "quantity": quantity,
            "subscription": subscription_id,
            "tax_rates": [],
        }

    def retrieve(self, subscription_id: str) -> dict[str, Any]:
        with self._store.lock:
            return existing(self._store.data.subscriptions, "subscription", subscription_id)

    def list_page(self, params: dict[str, Any]) -> dict[str, Any]:
        """Newest first; like Stripe, canceled ones only with `status=canceled` or `all`."""
        status = params.get("status")
        if status is not None and status not in (*STATUSES, "all", "ended"):
            raise invalid(f"Invalid status: {status}", param="status")
        with self._store.lock:
            items = list(reversed(self._store.data.subscriptions.values()))
        if params.get("customer"):
            items = [s for s in items if s["customer"] == params["customer"]]
        if status is None:
            items = [s for s in items if s["status"] != "canceled"]
        elif status == "ended":
            items = [s for s in items if s["status"] in ("canceled", "incomplete_expired")]
        elif status != "all":
            items = [s for s in items if s["status"] == status]
        return paginate(items, params, "/v1/subscriptions")

    def update(
        self, subscription_id: str, params: dict[str, Any], request: dict[str, str | None]
    ) -> dict[str, Any]:
        """Metadata, description and scheduled cancellation (`cancel_at_period_end`,
        `cancel_at`); a canceled subscription accepts only metadata."""
        with self._store.lock:
            subscription = self.retrieve(subscription_id)
            canceled = subscription["status"] == "canceled"
            _unknown(params, _CANCELED_UPDATE_PARAMS if canceled else _UPDATE_PARAMS)
            changes: dict[str, Any] = {}
            if "metadata" in params:
                changes["metadata"] = _merged_metadata(subscription["metadata"], params["metadata"])
            if "description" in params:
                changes["description"] = params["description"] or None
            if "cancel_at_period_end" in params:
                at_period_end = _boolean(params, "cancel_at_period_end")
                period_end = subscription["items"]["data"][0]["current_period_end"]
                changes["cancel_at_period_end"] = at_period_end
                changes["cancel_at"] = period_end if at_period_end else None
                changes["canceled_at"] = self._store.clock.now() if at_period_end else None
            if "cancel_at" in params:
                cancel_at = int_param(params, "cancel_at", required=False)
                changes["cancel_at"] = cancel_at
                changes["canceled_at"] = None if cancel_at is None else self._store.clock.now()
            return self._change(subscription, changes, request)

    def cancel(
        self, subscription_id: str, params: dict[str, Any], request: dict[str, str | None]
    ) -> dict[str, Any]:
        """Cancel now (`DELETE`): `canceled`, ended, and `customer.subscription.deleted`."""
        _unknown(params, _CANCEL_PARAMS)
        with self._store.lock:
            subscription = self.retrieve(subscription_id)
            if subscription["status"] == "canceled":
                raise StripeAPIError(
                    400, f"This subscription ({subscription_id}) has already been canceled."
                )
            now = self._store.clock.now()
            changes = {
                "status": "canceled",
                "canceled_at": subscription["canceled_at"] or now,
                "ended_at": now,
                "cancel_at_period_end": False,
                "cancellation_details": {
                    "comment": None,
                    "feedback": None,
                    "reason": "cancellation_requested",
                },
            }
            return self._change(
                subscription, changes, request, event_type="customer.subscription.deleted"
            )

    def settle_payment(self, subscription_id: str, succeeded: bool) -> dict[str, Any]:
        """The control plane's stand-in for an invoice payment (no invoices are emulated yet):
        success makes an `incomplete` or `past_due` subscription `active`, failure makes an
        `active` one `past_due`. Stripe makes such changes itself, so the event has no request.
        """
        with self._store.lock:
            subscription = self.retrieve(subscription_id)
            status = subscription["status"]
            if succeeded and status in ("incomplete", "past_due", "unpaid"):
                status = "active"
            elif not succeeded and status == "active":
                status = "past_due"
            return self._change(subscription, {"status": status}, None)

    def _change(
        self,
        subscription: dict[str, Any],
        changes: dict[str, Any],
        request: dict[str, str | None] | None,
        event_type: str = "customer.subscription.updated",
    ) -> dict[str, Any]:
        """Apply `changes`; emit the event only if something changed, with the old values."""
        previous = {k: subscription[k] for k, v in changes.items() if subscription[k] != v}
        if not previous and event_type == "customer.subscription.updated":
            return subscription
        subscription.update(changes)
        self._store.dirty = True
        self._events.emit(
            event_type,
            subscription,
            previous_attributes=previous if event_type.endswith(".updated") else None,
            request=request,
        )
        return subscription
