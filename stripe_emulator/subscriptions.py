"""`/v1/subscriptions`: a subscription's lifecycle, each change announced as an event.

Objects follow the installed SDK's API version (endive; response_shapes.py checks them): the
billing period lives on each item (`items.data[].current_period_start|end`, since basil) and
each item embeds its price and the legacy `plan`. Every change emits
`customer.subscription.created|updated|deleted` (with `previous_attributes` on updates), so
`GET /v1/subscriptions/{id}` and the event list always agree. Stripe never reactivates a
canceled subscription; neither does this.

Periods come from the prices' interval and the billing cycle anchor (billing_periods.py); what
happens when one ends (roll-over, scheduled cancellation, invoices) is billing.py's, which calls
`renew` and `end` here. A customer on a test clock subscribes, changes and cancels at that
clock's time. An item must name a price the emulator knows (Stripe's 404 otherwise). Trials,
`pause_collection` and resuming follow Stripe's docs as the emulator's README describes.
"""

from __future__ import annotations

from typing import Any

from stripe_emulator.billing_periods import (
    backdated_start,
    boundary,
    first_period,
    next_boundary,
)
from stripe_emulator.customers import Customers
from stripe_emulator.errors import StripeAPIError, existing, invalid, missing_param, no_such
from stripe_emulator.events import Events
from stripe_emulator.ids import new_id
from stripe_emulator.pagination import int_param, paginate
from stripe_emulator.params import boolean, merged_metadata, reject_unemulated
from stripe_emulator.prices import Catalog
from stripe_emulator.store import Store
from stripe_emulator.subscription_objects import (
    SUBSCRIPTION_STATUSES,
    billing_interval,
    subscription_object,
)
from stripe_emulator.test_clocks import TestClocks

# `proration_behavior`: prorations only concern licensed quantities; every emulated price is
# metered (billed on usage for the period it was used in), so there is never anything to prorate.
_CREATE_PARAMS = {
    "customer",
    "backdate_start_date",
    "items",
    "metadata",
    "payment_behavior",
    "description",
    "billing_cycle_anchor",
    "billing_cycle_anchor_config",
    "cancel_at",
    "cancel_at_period_end",
    "expand",
    "proration_behavior",
    "trial_end",
    "trial_period_days",
    "trial_settings",
}
_UPDATE_PARAMS = {
    "metadata",
    "cancel_at_period_end",
    "cancel_at",
    "description",
    "expand",
    "pause_collection",
    "proration_behavior",
}
_CANCELED_UPDATE_PARAMS = {"metadata", "cancellation_details", "expand"}
_CANCEL_PARAMS = {"invoice_now", "prorate", "expand", "cancellation_details"}
_RESUME_PARAMS = {"billing_cycle_anchor", "proration_behavior", "expand"}
_REQUESTED = {"comment": None, "feedback": None, "reason": "cancellation_requested"}
# Stripe's limit on a trial: at most two years.
_MAX_TRIAL_S = 730 * 86400


class Subscriptions:
    def __init__(
        self,
        store: Store,
        customers: Customers,
        events: Events,
        catalog: Catalog,
        clocks: TestClocks,
    ) -> None:
        self._store = store
        self._customers = customers
        self._events = events
        self._catalog = catalog
        self._clocks = clocks

    def create(self, params: dict[str, Any], request: dict[str, str | None]) -> dict[str, Any]:
        """`payment_behavior=default_incomplete` starts `incomplete` until a payment settles
        (control plane); otherwise the first payment is taken to succeed at once: `active`."""
        reject_unemulated(params, _CREATE_PARAMS)
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
        prices = [self._price(item, index) for index, item in enumerate(items)]
        interval, interval_count = billing_interval(prices)
        store = self._store
        with store.lock:
            now = self._clocks.now_for(str(customer))
            anchor, period_end, anchor_config = first_period(now, params, interval, interval_count)
            start = backdated_start(params, now)
            trial_end = _trial_end(params, now)
            if trial_end is not None:
                anchor, period_end = trial_end, trial_end
            subscription = subscription_object(
                new_id("sub_", 24),
                params,
                list(zip(items, prices, strict=True)),
                (now if start is None else start, period_end),
                anchor,
                anchor_config,
                self._clocks.clock_of(str(customer)),
                created=now,
            )
            subscription.update(self._cancellation(subscription, params, now))
            if trial_end is not None:
                subscription.update(
                    status="trialing",
                    trial_start=now,
                    trial_end=trial_end,
                    trial_settings=_trial_settings(params),
                )
            store.data.subscriptions[subscription["id"]] = subscription
            store.dirty = True
            self._events.emit("customer.subscription.created", subscription, request=request)
            return subscription

    def _price(self, item: Any, index: int) -> dict[str, Any]:
        """The item's price, which must exist (Stripe answers 404 for an unknown one)."""
        if not isinstance(item, dict) or not item.get("price"):
            raise missing_param(f"items[{index}][price]")
        price = self._catalog.find_price(str(item["price"]))
        if price is None:
            raise no_such("price", str(item["price"]), param=f"items[{index}][price]")
        return price

    def retrieve(self, subscription_id: str) -> dict[str, Any]:
        with self._store.lock:
            return existing(self._store.data.subscriptions, "subscription", subscription_id)

    def list_page(self, params: dict[str, Any]) -> dict[str, Any]:
        """Newest first; like Stripe, canceled ones only with `status=canceled` or `all`."""
        status = params.get("status")
        if status is not None and status not in (*SUBSCRIPTION_STATUSES, "all", "ended"):
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
            reject_unemulated(params, _CANCELED_UPDATE_PARAMS if canceled else _UPDATE_PARAMS)
            changes: dict[str, Any] = {}
            if "metadata" in params:
                changes["metadata"] = merged_metadata(subscription["metadata"], params["metadata"])
            if "description" in params:
                changes["description"] = params["description"] or None
            if "pause_collection" in params:
                changes["pause_collection"] = _pause_collection(params["pause_collection"])
            now = self._clocks.now_for(subscription["customer"])
            changes.update(self._cancellation(subscription, params, now))
            return self._change(subscription, changes, request)

    def resume(
        self, subscription_id: str, params: dict[str, Any], request: dict[str, str | None]
    ) -> dict[str, Any]:
        """`POST /v1/subscriptions/{id}/resume`: a `paused` subscription becomes `active`.

        `billing_cycle_anchor[type]=now` (the default) starts a new period now, anchored there;
        `unchanged` keeps the anchor, so the current period runs to its next boundary."""
        reject_unemulated(params, _RESUME_PARAMS)
        with self._store.lock:
            subscription = self.retrieve(subscription_id)
            if subscription["status"] != "paused":
                raise invalid(
                    f"Subscription {subscription_id} cannot be resumed because its status is "
                    f"{subscription['status']}; only paused subscriptions can be resumed.",
                )
            now = self._clocks.now_for(subscription["customer"])
            recurring = subscription["items"]["data"][0]["price"]["recurring"]
            interval, count = recurring["interval"], recurring["interval_count"]
            anchor = subscription["billing_cycle_anchor"]
            # An object in this API version: `billing_cycle_anchor[type]=now|unchanged`.
            anchor_type = (params.get("billing_cycle_anchor") or {}).get("type", "now")
            if anchor_type == "now":
                anchor, end = now, boundary(now, interval, count, 1)
                changes: dict[str, Any] = {"billing_cycle_anchor": now}
            else:
                end, changes = next_boundary(anchor, interval, count, now), {}
            changes.update(status="active", items=_with_period(subscription, (now, end)))
            resumed = self._change(subscription, changes, request)
            self._events.emit("customer.subscription.resumed", resumed, request=request)
            return resumed

    def end_trial(self, subscription: dict[str, Any], at: int, created: int | None) -> None:
        """The trial ended (Stripe docs "Free trials": a trial without a payment method ends
        as `trial_settings.end_behavior.missing_payment_method` says). The emulator keeps no
        payment methods, so that setting always applies: `pause` pauses the subscription
        (`customer.subscription.paused`), `cancel` cancels it, `create_invoice` (default)
        starts the first paid period at the trial's end, the anchor."""
        behavior = subscription["trial_settings"]["end_behavior"]["missing_payment_method"]
        if behavior == "cancel":
            self.end(subscription, at, subscription["latest_invoice"], created=created)
            return
        if behavior == "pause":
            self._change(subscription, {"status": "paused"}, None, created=created)
            self._events.emit("customer.subscription.paused", subscription, created=created)
            return
        recurring = subscription["items"]["data"][0]["price"]["recurring"]
        end = boundary(at, recurring["interval"], recurring["interval_count"], 1)
        changes = {"status": "active", "items": _with_period(subscription, (at, end))}
        self._change(subscription, changes, None, created=created)

    def collection_paused(self, subscription_id: str, at: int) -> str | None:
        """The `pause_collection[behavior]` in force at `at`; a pause whose `resumes_at` has
        come is lifted (`customer.subscription.updated`), as Stripe does."""
        subscription = self._store.data.subscriptions.get(subscription_id)
        if subscription is None or subscription["pause_collection"] is None:
            return None
        pause = subscription["pause_collection"]
        if pause["resumes_at"] is not None and pause["resumes_at"] <= at:
            self._change(subscription, {"pause_collection": None}, None)
            return None
        return str(pause["behavior"])

    @staticmethod
    def _cancellation(
        subscription: dict[str, Any], params: dict[str, Any], now: int
    ) -> dict[str, Any]:
        """`cancel_at_period_end` (cancel at the current period's end) or `cancel_at`."""
        changes: dict[str, Any] = {}
        if "cancel_at_period_end" in params:
            at_period_end = boolean(params, "cancel_at_period_end")
            period_end = subscription["items"]["data"][0]["current_period_end"]
            changes["cancel_at_period_end"] = at_period_end
            changes["cancel_at"] = period_end if at_period_end else None
            changes["canceled_at"] = now if at_period_end else None
        if "cancel_at" in params:
            cancel_at = int_param(params, "cancel_at", required=False)
            if cancel_at is not None and cancel_at <= now:
                raise invalid("cancel_at must be in the future.", param="cancel_at")
            changes["cancel_at"] = cancel_at
            changes["canceled_at"] = None if cancel_at is None else now
        return changes

    def cancel(
        self,
        subscription_id: str,
        params: dict[str, Any],
        request: dict[str, str | None],
        final_invoice: str | None = None,
    ) -> dict[str, Any]:
        """Cancel now (`DELETE`): `canceled`, ended, and `customer.subscription.deleted`.

        Its final invoice (`invoice_now=true`) is billing.py's, which wraps this call."""
        reject_unemulated(params, _CANCEL_PARAMS)
        with self._store.lock:
            subscription = self.retrieve(subscription_id)
            if subscription["status"] == "canceled":
                raise StripeAPIError(
                    400, f"This subscription ({subscription_id}) has already been canceled."
                )
            now = self._clocks.now_for(subscription["customer"])
            latest = final_invoice or subscription["latest_invoice"]
            return self.end(subscription, now, latest, request=request)

    def end(
        self,
        subscription: dict[str, Any],
        at: int,
        latest_invoice: str | None,
        *,
        request: dict[str, str | None] | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        """End the subscription at `at` (now, a scheduled `cancel_at` or its period end)."""
        changes = {
            "status": "canceled",
            "canceled_at": subscription["canceled_at"] or at,
            "ended_at": at,
            "cancel_at_period_end": False,
            "cancellation_details": dict(_REQUESTED),
            "latest_invoice": latest_invoice,
        }
        return self._change(
            subscription,
            changes,
            request,
            event_type="customer.subscription.deleted",
            created=created,
        )

    def renew(
        self,
        subscription: dict[str, Any],
        period: tuple[int, int],
        latest_invoice: str,
        created: int | None,
    ) -> dict[str, Any]:
        """Start the next period on every item (Stripe's renewal `.updated` event)."""
        changes = {"items": _with_period(subscription, period), "latest_invoice": latest_invoice}
        return self._change(subscription, changes, None, created=created)

    def settle_payment(self, subscription_id: str, succeeded: bool) -> dict[str, Any]:
        """The control plane's stand-in for a failed or late payment (invoices here are always
        paid at once): success makes an `incomplete` or `past_due` subscription `active`,
        failure makes an `active` one `past_due`. Stripe makes such changes itself, so the
        event has no request.
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
        created: int | None = None,
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
            created=created,
        )
        return subscription


def _with_period(subscription: dict[str, Any], period: tuple[int, int]) -> dict[str, Any]:
    """The subscription's item list with every item in `period` (items share one period)."""
    items = dict(subscription["items"])
    items["data"] = [
        {**item, "current_period_start": period[0], "current_period_end": period[1]}
        for item in items["data"]
    ]
    return items


def _trial_end(params: dict[str, Any], now: int) -> int | None:
    """`trial_end` (a timestamp, or `now`: no trial) or `trial_period_days`; None: no trial."""
    if "trial_end" in params and "trial_period_days" in params:
        raise invalid(
            "You may only specify one of trial_end and trial_period_days.", param="trial_end"
        )
    if params.get("trial_end") == "now":
        return None
    if "trial_end" in params:
        end = int_param(params, "trial_end") or 0
    elif "trial_period_days" in params:
        days = int_param(params, "trial_period_days") or 0
        if days == 0:
            return None
        end = now + days * 86400
    else:
        return None
    if "billing_cycle_anchor" in params or "billing_cycle_anchor_config" in params:
        raise invalid(
            "The Stripe emulator does not emulate a trial together with a billing cycle anchor "
            "(the anchor is the trial's end).",
            param="trial_end",
        )
    if not now < end <= now + _MAX_TRIAL_S:
        raise invalid(
            "Invalid timestamp: must be in the future and at most two years away.",
            param="trial_end",
        )
    return end


def _trial_settings(params: dict[str, Any]) -> dict[str, Any]:
    settings = params.get("trial_settings") or {}
    behavior = (settings.get("end_behavior") or {}).get("missing_payment_method")
    return {"end_behavior": {"missing_payment_method": behavior or "create_invoice"}}


def _pause_collection(value: Any) -> dict[str, Any] | None:
    """`pause_collection[behavior]` (+ optional `resumes_at`); an empty string unpauses."""
    if value == "":
        return None
    resumes_at = int_param(value, "resumes_at", required=False)
    return {"behavior": str(value["behavior"]), "resumes_at": resumes_at}
