"""What Stripe does on its own as time passes: period ends, cancellations, finalization.

One scheduler for both kinds of time. `run_due(None)` runs what fell due on the emulator clock
for customers without a test clock (called before every API request, by the server's ticker
and when the control plane moves the clock); `run_due(clock_id, until)` runs what falls due
while a test clock advances. Actions run one at a time, earliest first (same instant: invoice
finalization before period ends, then creation order), so a clock moved across several periods
produces every period's events in the order Stripe would have.

At a subscription's period end (Stripe docs "How subscriptions work", "Cancel subscriptions"):
- normally: the period rolls forward on every item (`customer.subscription.updated`, with
  `latest_invoice`), then the draft invoice for the period that ended (`invoice.created`);
- when `cancel_at` (or `cancel_at_period_end`, which sets it to the period end) comes first:
  the subscription ends at that instant (`customer.subscription.deleted`, `ended_at`), then
  the final invoice for [period start, cancel_at) (`invoice.created`);
- each draft is finalized and paid when its `automatically_finalizes_at` comes
  (`invoice.finalized`, `invoice.paid`).
`DELETE /v1/subscriptions/{id}` ends it at once and, like Stripe, bills the partial period only
with `invoice_now=true`. `incomplete` subscriptions never renew (Stripe expires them after 23 h;
not emulated).
"""

from __future__ import annotations

from typing import Any

from stripe_emulator.billing_periods import next_boundary
from stripe_emulator.invoices import Invoices
from stripe_emulator.params import boolean
from stripe_emulator.store import Store
from stripe_emulator.subscriptions import Subscriptions
from stripe_emulator.test_clocks import TestClocks

_BILLED = ("active", "past_due", "trialing", "unpaid")


class Billing:
    def __init__(
        self,
        store: Store,
        subscriptions: Subscriptions,
        invoices: Invoices,
        clocks: TestClocks,
    ) -> None:
        self._store = store
        self._subscriptions = subscriptions
        self._invoices = invoices
        self._clocks = clocks

    def run_due(self, clock_id: str | None = None, until: int | None = None) -> None:
        """Run every action due up to `until` (default: the emulator clock) in `clock_id`'s
        world (None: customers on the emulator clock), moving that test clock as it goes.

        Events about customers on the emulator clock are `created` at the action's instant;
        test-clock events at the emulator clock's now, as Stripe stamps events in real time.
        """
        store = self._store
        with store.lock:
            limit = store.clock.now() if until is None else until
            while (due := self._next_due(clock_id, limit)) is not None:
                at, kind, target = due
                if clock_id is not None:
                    store.data.test_clocks[clock_id]["frozen_time"] = at
                created = at if clock_id is None else None
                if kind == "finalize":
                    subscription_id = target["parent"]["subscription_details"]["subscription"]
                    paused = self._subscriptions.collection_paused(subscription_id, at)
                    self._invoices.finalize_and_pay(target, at, created, paused)
                else:
                    self._period_end(target, at, created)

    def _next_due(self, clock_id: str | None, limit: int) -> tuple[int, str, dict[str, Any]] | None:
        candidates: list[tuple[int, int, int, str, dict[str, Any]]] = []
        data = self._store.data
        for order, invoice in enumerate(data.invoices.values()):
            due = invoice["automatically_finalizes_at"]
            if (
                invoice["status"] == "draft"
                and invoice["test_clock"] == clock_id
                and due is not None
                and due <= limit
            ):
                candidates.append((due, 0, order, "finalize", invoice))
        for order, subscription in enumerate(data.subscriptions.values()):
            if subscription["status"] not in _BILLED or subscription["test_clock"] != clock_id:
                continue
            period_end = subscription["items"]["data"][0]["current_period_end"]
            cancel_at = subscription["cancel_at"]
            due = period_end if cancel_at is None else min(cancel_at, period_end)
            if due <= limit:
                candidates.append((due, 1, order, "period_end", subscription))
        if not candidates:
            return None
        at, _, _, kind, target = min(candidates, key=lambda c: c[:3])
        return at, kind, target

    def _period_end(self, subscription: dict[str, Any], at: int, created: int | None) -> None:
        """Renew, or end at a scheduled cancellation; then the period's draft invoice. A
        trial's end bills nothing (usage in a trial is free) and goes on as the trial says."""
        item = subscription["items"]["data"][0]
        if subscription["status"] == "trialing" and at == subscription["trial_end"]:
            self._subscriptions.end_trial(subscription, at, created)
            return
        period = (item["current_period_start"], at)
        cancel_at = subscription["cancel_at"]
        reason = "subscription_cycle" if at == item["current_period_end"] else "subscription_update"
        invoice = self._invoices.draft(subscription, period, reason)
        if cancel_at is not None and cancel_at <= at:
            self._subscriptions.end(subscription, at, invoice["id"], created=created)
        else:
            recurring = item["price"].get("recurring") or {"interval": "month", "interval_count": 1}
            config = subscription["billing_cycle_anchor_config"] or {}
            end = next_boundary(
                subscription["billing_cycle_anchor"],
                recurring["interval"],
                recurring["interval_count"],
                at,
                config.get("day_of_month"),
            )
            self._subscriptions.renew(subscription, (at, end), invoice["id"], created)
        self._invoices.announce(invoice, created)

    def cancel_now(
        self, subscription_id: str, params: dict[str, Any], request: dict[str, str | None]
    ) -> dict[str, Any]:
        """`DELETE /v1/subscriptions/{id}`; `invoice_now=true` bills the partial period."""
        with self._store.lock:
            subscription = self._subscriptions.retrieve(subscription_id)
            invoice_now = "invoice_now" in params and boolean(params, "invoice_now")
            if not invoice_now or subscription["status"] == "canceled":
                return self._subscriptions.cancel(subscription_id, params, request)
            at = self._clocks.now_for(subscription["customer"])
            start = subscription["items"]["data"][0]["current_period_start"]
            invoice = self._invoices.draft(subscription, (start, at), "subscription_update")
            canceled = self._subscriptions.cancel(
                subscription_id, params, request, final_invoice=invoice["id"]
            )
            self._invoices.announce(invoice, None)
            return canceled
