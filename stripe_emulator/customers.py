"""`/v1/customers`: just enough of a customer for meter events and subscriptions to name one.

A customer created with `test_clock=clock_…` lives at that clock's time (see test_clocks.py).
"""

from __future__ import annotations

from typing import Any

from stripe_emulator.errors import existing, no_such
from stripe_emulator.ids import new_id
from stripe_emulator.pagination import paginate
from stripe_emulator.store import Store


class Customers:
    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        store = self._store
        with store.lock:
            clock_id = params.get("test_clock") or None
            if clock_id is not None and clock_id not in store.data.test_clocks:
                raise no_such("test_clock", str(clock_id), param="test_clock")
            customer_id = new_id("cus_", 14)
            customer: dict[str, Any] = {
                "id": customer_id,
                "object": "customer",
                "address": None,
                "balance": 0,
                "business_name": params.get("business_name"),
                "created": (
                    store.data.test_clocks[clock_id]["frozen_time"]
                    if clock_id
                    else store.clock.now()
                ),
                "currency": None,
                "customer_account": None,
                "default_source": None,
                "delinquent": False,
                "description": params.get("description"),
                "discount": None,
                "email": params.get("email"),
                "individual_name": params.get("individual_name"),
                "invoice_prefix": customer_id[4:12].upper(),
                "invoice_settings": {
                    "custom_fields": None,
                    "default_payment_method": None,
                    "footer": None,
                    "rendering_options": None,
                },
                "livemode": False,
                "metadata": dict(params.get("metadata") or {}),
                "name": params.get("name"),
                "next_invoice_sequence": 1,
                "phone": params.get("phone"),
                "preferred_locales": [],
                "shipping": None,
                "tax_exempt": "none",
                "test_clock": clock_id,
            }
            store.data.customers[customer_id] = customer
            store.dirty = True
            return customer

    def retrieve(self, customer_id: str) -> dict[str, Any]:
        with self._store.lock:
            return existing(self._store.data.customers, "customer", customer_id)

    def exists(self, customer_id: str) -> bool:
        with self._store.lock:
            return customer_id in self._store.data.customers

    def list_page(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._store.lock:
            items = list(reversed(self._store.data.customers.values()))
            if params.get("email"):
                items = [c for c in items if c["email"] == params["email"]]
            if params.get("test_clock"):
                items = [c for c in items if c["test_clock"] == params["test_clock"]]
            return paginate(items, params, "/v1/customers")
