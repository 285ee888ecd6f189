"""`/v1/invoices`: the invoice a subscription's period produces, and its metered lines.

Rules (Stripe docs "How subscriptions work" → invoice lifecycle, "Configure an invoice
finalization grace period", usage-based billing "Record usage for billing"; shapes from the
API reference `invoice` and `invoice line item`, basil: the subscription under
`parent.subscription_details`, each line's price under `pricing.price_details`):
- At a period end Stripe creates a `draft` invoice for the period that ended and finalizes it
  when `automatically_finalizes_at` comes: its creation plus the account's grace period (1 h by
  default, up to 72 h), fixed when the draft is made.
- One line per metered price of the subscription: quantity is the meter's aggregate for the
  customer over [period_start, period_end) from the events received before finalization (the
  draft shows the aggregate so far and finalization recomputes it; usage arriving later is on
  no invoice), a negative total is billed as 0, amount = quantity x unit price, rounded half
  up to a whole minor unit. Items whose price the emulator does not know get no line.
- Finalizing gives the invoice its number (`{customer invoice_prefix}-0001`, …) and `open`;
  collection is taken to succeed at once: `paid` in the same instant (no payment intents,
  charges or failed payments are emulated; `invoice.payment_succeeded` is not emitted).
"""

from __future__ import annotations

import json
from typing import Any

from stripe_emulator.errors import existing, invalid
from stripe_emulator.events import Events
from stripe_emulator.ids import new_id
from stripe_emulator.invoice_objects import EMPTY_FIELDS, line_amount, line_item
from stripe_emulator.pagination import paginate
from stripe_emulator.prices import Catalog
from stripe_emulator.store import Store
from stripe_emulator.summaries import Summaries

STATUSES = ("draft", "open", "paid", "uncollectible", "void")
MAX_GRACE_PERIOD_S = 72 * 3600


class Invoices:
    def __init__(
        self, store: Store, events: Events, summaries: Summaries, catalog: Catalog
    ) -> None:
        self._store = store
        self._events = events
        self._summaries = summaries
        self._catalog = catalog

    def draft(
        self, subscription: dict[str, Any], period: tuple[int, int], billing_reason: str
    ) -> dict[str, Any]:
        """Store the draft invoice for `period` (made at its end); the caller announces it with
        `announce`, after the subscription's own event, in Stripe's order."""
        store = self._store
        with store.lock:
            end = period[1]
            invoice = self.build(
                subscription,
                period,
                billing_reason,
                invoice_id=new_id("in_", 24),
                created=end,
                finalizes_at=end + store.settings.invoice_grace_period_s,
            )
            store.data.invoices[invoice["id"]] = invoice
            store.dirty = True
            return invoice

    def build(
        self,
        subscription: dict[str, Any],
        period: tuple[int, int],
        billing_reason: str,
        *,
        invoice_id: str,
        created: int,
        finalizes_at: int | None,
    ) -> dict[str, Any]:
        """A draft for `period` with its metered lines measured now, stored nowhere: drafts
        (`draft`) and previews (`invoice_previews.py`) are the one invoice, measured one way."""
        store = self._store
        with store.lock:
            start, end = period
            customer = store.data.customers.get(subscription["customer"], {})
            invoice: dict[str, Any] = {
                **EMPTY_FIELDS,
                "id": invoice_id,
                "object": "invoice",
                "account_country": "US",
                "account_name": "Stripe emulator",
                "amount_due": 0,
                "amount_overpaid": 0,
                "amount_paid": 0,
                "amount_remaining": 0,
                "amount_shipping": 0,
                "attempt_count": 0,
                "attempted": False,
                "auto_advance": True,
                "automatic_tax": {
                    "disabled_reason": None,
                    "enabled": False,
                    "liability": None,
                    "provider": None,
                    "status": None,
                },
                "automatically_finalizes_at": finalizes_at,
                "billing_reason": billing_reason,
                "collection_method": "charge_automatically",
                "created": created,
                "currency": subscription["currency"],
                "customer": subscription["customer"],
                "customer_email": customer.get("email"),
                "customer_name": customer.get("name"),
                "default_payment_method": None,
                "description": None,
                "discounts": [],
                "due_date": None,
                "effective_at": None,
                "ending_balance": None,
                "hosted_invoice_url": None,
                "invoice_pdf": None,
                "issuer": {"type": "self"},
                "last_finalization_error": None,
                "lines": {
                    "object": "list",
                    "data": self._lines(invoice_id, subscription, period),
                    "has_more": False,
                    "url": f"/v1/invoices/{invoice_id}/lines",
                },
                "livemode": False,
                "metadata": {},
                "next_payment_attempt": None,
                "number": None,
                "parent": {
                    "type": "subscription_details",
                    "quote_details": None,
                    "subscription_details": {
                        "metadata": dict(subscription["metadata"]),
                        "subscription": subscription["id"],
                    },
                },
                "period_end": end,
                "period_start": start,
                "starting_balance": 0,
                "status": "draft",
                "status_transitions": {
                    "finalized_at": None,
                    "marked_uncollectible_at": None,
                    "paid_at": None,
                    "voided_at": None,
                },
                "test_clock": subscription["test_clock"],
                "total_discount_amounts": [],
                "total_taxes": [],
                "webhooks_delivered_at": None,
            }
            _total(invoice)
            return invoice

    def _lines(
        self, invoice_id: str, subscription: dict[str, Any], period: tuple[int, int]
    ) -> list[dict[str, Any]]:
        lines = []
        for item in subscription["items"]["data"]:
            price = self._catalog.find_price(item["price"]["id"])
            if price is None:
                continue
            lines.append(line_item(invoice_id, subscription, item, price, period))
        for line in lines:
            self._measure(line, subscription["customer"])
        return lines

    def _measure(self, line: dict[str, Any], customer: str) -> None:
        """The line's quantity and amount from the meter's aggregate as it stands now."""
        price = self._catalog.retrieve_price(line["pricing"]["price_details"]["price"])
        usage = self._summaries.usage(price["recurring"]["meter"], customer)
        quantity = max(0, int(usage.value(line["period"]["start"], line["period"]["end"])))
        amount = line_amount(quantity, price["unit_amount_decimal"])
        product = self._store.data.products.get(price["product"], {})
        line.update(
            quantity=quantity,
            quantity_decimal=str(quantity),
            amount=amount,
            subtotal=amount,
            description=f"{quantity} x {product.get('name', price['product'])} "
            f"(at {price['unit_amount_decimal']} {price['currency']} / unit)",
        )

    def announce(self, invoice: dict[str, Any], created: int | None) -> None:
        self._events.emit("invoice.created", invoice, created=created)

    def finalize_and_pay(
        self, invoice: dict[str, Any], at: int, created: int | None, paused: str | None = None
    ) -> None:
        """Finalize at `at` with the usage received until now, then take the payment.

        While the subscription's collection is paused (`pause_collection[behavior]`, Stripe
        docs "Pause payment collection"): `keep_as_draft` leaves the invoice a draft that is
        never finalized on its own; `void` and `mark_uncollectible` finalize it and then void
        it or mark it uncollectible instead of taking the payment."""
        store = self._store
        with store.lock:
            if paused == "keep_as_draft":
                invoice.update(automatically_finalizes_at=None, auto_advance=False)
                store.dirty = True
                return
            for line in invoice["lines"]["data"]:
                self._measure(line, invoice["customer"])
            _total(invoice)
            customer = store.data.customers.get(invoice["customer"], {})
            numbered = sum(
                1
                for other in store.data.invoices.values()
                if other["customer"] == invoice["customer"] and other["number"]
            )
            prefix = customer.get("invoice_prefix", "EMULATOR")
            if customer:
                customer["next_invoice_sequence"] = numbered + 2
            invoice.update(
                status="open",
                number=f"{prefix}-{numbered + 1:04d}",
                automatically_finalizes_at=None,
                effective_at=at,
                ending_balance=0,
                webhooks_delivered_at=at,
            )
            invoice["status_transitions"]["finalized_at"] = at
            store.dirty = True
            self._events.emit("invoice.finalized", invoice, created=created)
            if paused in ("void", "mark_uncollectible"):
                self._close_unpaid(invoice, at, created, paused)
                return
            invoice.update(
                status="paid",
                amount_paid=invoice["amount_due"],
                amount_remaining=0,
                attempted=True,
                attempt_count=1 if invoice["amount_due"] else 0,
            )
            invoice["status_transitions"]["paid_at"] = at
            self._events.emit("invoice.paid", invoice, created=created)

    def _close_unpaid(
        self, invoice: dict[str, Any], at: int, created: int | None, behavior: str
    ) -> None:
        if behavior == "void":
            invoice.update(status="void", amount_remaining=0)
            invoice["status_transitions"]["voided_at"] = at
            self._events.emit("invoice.voided", invoice, created=created)
        else:
            invoice.update(status="uncollectible")
            invoice["status_transitions"]["marked_uncollectible_at"] = at
            self._events.emit("invoice.marked_uncollectible", invoice, created=created)

    def retrieve(self, invoice_id: str) -> dict[str, Any]:
        with self._store.lock:
            return existing(self._store.data.invoices, "invoice", invoice_id)

    def list_page(self, params: dict[str, Any]) -> dict[str, Any]:
        """Newest first, filtered by `customer`, `subscription` and `status`."""
        status = params.get("status")
        if status is not None and status not in STATUSES:
            raise invalid(f"Invalid status: {status}", param="status")
        with self._store.lock:
            invoices = sorted(
                reversed(self._store.data.invoices.values()),
                key=lambda invoice: invoice["created"],
                reverse=True,
            )
            if params.get("customer"):
                invoices = [i for i in invoices if i["customer"] == params["customer"]]
            if params.get("subscription"):
                invoices = [i for i in invoices if _subscription_of(i) == params["subscription"]]
            if status is not None:
                invoices = [i for i in invoices if i["status"] == status]
            return paginate(_copies(invoices), params, "/v1/invoices")

    def lines_page(self, invoice_id: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._store.lock:
            lines = self.retrieve(invoice_id)["lines"]["data"]
            return paginate(_copies(lines), params, f"/v1/invoices/{invoice_id}/lines")


def _subscription_of(invoice: dict[str, Any]) -> str | None:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return details.get("subscription")


def _total(invoice: dict[str, Any]) -> None:
    total = sum(line["amount"] for line in invoice["lines"]["data"])
    invoice.update(
        subtotal=total,
        subtotal_excluding_tax=total,
        total=total,
        total_excluding_tax=total,
        amount_due=total,
        amount_remaining=total - invoice["amount_paid"],
    )


def _copies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    copied: list[dict[str, Any]] = json.loads(json.dumps(objects))
    return copied
