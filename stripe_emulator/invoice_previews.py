"""`POST /v1/invoices/create_preview`: the invoice a subscription's current period would produce.

Rules (API reference "Create a preview invoice", API version 2026-10-28.endive, and the pinned
SDK's `InvoiceCreatePreviewParams` / `Invoice` docstrings; changelog "Replaces Upcoming Invoice
API methods with the Create Preview Invoice API", 2025-03-31.basil):
- A preview is not an invoice Stripe keeps: it "will not show up in invoice listing calls", so
  it is built and answered, never stored, and emits no event. Its `id` is prefixed
  `upcoming_in` (SDK, `Invoice.id`), its `billing_reason` is `upcoming` ("Reserved for upcoming
  invoices created through the Create Preview Invoice API"), it is a `draft` with no number and
  no `automatically_finalizes_at` (nothing is scheduled to finalize it).
- Since basil a customer's next invoice "across all their subscriptions" can no longer be
  previewed: `subscription` is required here (`customer` alone is a 400 naming `subscription`;
  previewing a subscription to be created from `subscription_details.items` is not emulated).
  A `customer` that is not the subscription's is a 400 (our wording).
- Its lines are the draft the current period's end would make (`Invoices.build`, the code drafts
  and finalization use): one line per metered price over [current period start, current period
  end), ending at `cancel_at` instead when that comes first; quantity = the meter's aggregate
  from the events received until now (`Summaries.usage`), amount = quantity x unit price,
  rounded half up. That is the bill so far: later usage is added when the period really ends.
- `preview_mode` `next` (default) and `recurring` give the same invoice: `recurring` leaves out
  one-time values (prorations, pending invoice items) that the emulator never makes.
- A subscription that will make no invoice at its current period's end (`canceled`,
  `incomplete`, `incomplete_expired`, `paused`; SDK: "paused subscriptions don't generate
  invoices") is a 400 with code `invoice_upcoming_none` (the code Stripe lists for "no upcoming
  invoice"; the HTTP status and wording are ours). A trial's period ends without an invoice
  (`billing.py`), and Stripe's preview of it (the invoice after the trial) is not emulated: a
  400 says so.
- `subscription_details[proration_behavior]` is accepted without effect (metered prices have
  nothing to prorate, as on subscriptions); every other `subscription_details` field and every
  other documented parameter (taxes, discounts, invoice items, schedules, currency, Connect) is
  a 400 saying it is not emulated.
"""

from __future__ import annotations

from typing import Any

from stripe_emulator.errors import invalid, missing_param
from stripe_emulator.ids import new_id
from stripe_emulator.invoices import Invoices
from stripe_emulator.params import reject_unemulated
from stripe_emulator.store import Store
from stripe_emulator.subscriptions import Subscriptions
from stripe_emulator.test_clocks import TestClocks

EMULATED = {"customer", "subscription", "subscription_details", "preview_mode"}
EMULATED_DETAILS = {"proration_behavior"}
# Statuses whose current period ends with an invoice (`billing.py` renews these).
INVOICED = ("active", "past_due", "unpaid")
NO_UPCOMING = "invoice_upcoming_none"


class InvoicePreviews:
    def __init__(
        self, store: Store, invoices: Invoices, subscriptions: Subscriptions, clocks: TestClocks
    ) -> None:
        self._store = store
        self._invoices = invoices
        self._subscriptions = subscriptions
        self._clocks = clocks

    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        reject_unemulated(params, EMULATED)
        details = params.get("subscription_details") or {}
        reject_unemulated(
            {f"subscription_details[{name}]": v for name, v in details.items()},
            {f"subscription_details[{name}]" for name in EMULATED_DETAILS},
        )
        subscription_id = params.get("subscription")
        if not subscription_id:
            if params.get("customer"):
                raise invalid(
                    "A preview needs the subscription to preview: since API version "
                    "2025-03-31.basil a customer's next invoice across all its subscriptions "
                    "cannot be previewed (pass subscription).",
                    param="subscription",
                )
            raise missing_param("subscription")
        with self._store.lock:
            subscription = self._subscriptions.retrieve(str(subscription_id))
            customer = params.get("customer")
            if customer and customer != subscription["customer"]:
                raise invalid(
                    f"The subscription {subscription_id} does not belong to the customer "
                    f"{customer}.",
                    param="customer",
                )
            return self._preview(subscription)

    def _preview(self, subscription: dict[str, Any]) -> dict[str, Any]:
        status = subscription["status"]
        if status == "trialing":
            raise invalid(
                "The Stripe emulator does not emulate the preview of a subscription in trial "
                "(see stripe_emulator/README.md).",
                param="subscription",
            )
        if status not in INVOICED:
            raise invalid(
                f"No upcoming invoices for the subscription {subscription['id']}: it is "
                f"{status}, and a {status} subscription makes no invoice.",
                param="subscription",
                code=NO_UPCOMING,
            )
        item = subscription["items"]["data"][0]
        start, end = item["current_period_start"], item["current_period_end"]
        if subscription["cancel_at"] is not None:
            end = min(end, subscription["cancel_at"])
        return self._invoices.build(
            subscription,
            (start, end),
            "upcoming",
            invoice_id=new_id("upcoming_in_", 24),
            created=self._clocks.now_for(subscription["customer"]),
            finalizes_at=None,
        )
