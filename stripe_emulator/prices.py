"""`/v1/products` and `/v1/prices`: what a subscription item bills, and through which meter.

Only what usage billing needs: a product with a name, and recurring *metered* prices per unit
backed by a Billing Meter (since API version basil, Stripe's metered prices must name a meter:
`recurring[meter]`). `unit_amount` (whole minor units) or `unit_amount_decimal` (up to 12
decimal places) is the price of one unit of the meter's aggregate. Licensed (flat) prices,
tiers, `transform_quantity` and one-time prices are not emulated and are refused with a 400 that
says so, so a test never believes it billed something the emulator ignores.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from stripe_emulator.billing_periods import INTERVALS, MAX_COUNT
from stripe_emulator.errors import StripeAPIError, existing, invalid, missing_param, no_such
from stripe_emulator.ids import new_id
from stripe_emulator.meters import Meters
from stripe_emulator.pagination import int_param, paginate
from stripe_emulator.params import boolean, merged_metadata, reject_unemulated
from stripe_emulator.store import Store

_PRODUCT_PARAMS = {"name", "description", "metadata", "active", "unit_label", "expand"}
_PRICE_PARAMS = {
    "currency",
    "product",
    "product_data",
    "recurring",
    "unit_amount",
    "unit_amount_decimal",
    "nickname",
    "lookup_key",
    "metadata",
    "active",
    "billing_scheme",
    "expand",
}


def _not_emulated(what: str, param: str) -> StripeAPIError:
    return invalid(f"The Stripe emulator does not bill {what}.", param=param)


class Catalog:
    """Products and their prices, one store."""

    def __init__(self, store: Store, meters: Meters) -> None:
        self._store = store
        self._meters = meters

    # -- products -----------------------------------------------------------------------------

    def create_product(self, params: dict[str, Any]) -> dict[str, Any]:
        reject_unemulated(params, _PRODUCT_PARAMS)
        if not params.get("name"):
            raise missing_param("name")
        with self._store.lock:
            return self._new_product(params)

    def _new_product(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self._store.clock.now()
        product: dict[str, Any] = {
            "id": new_id("prod_", 14),
            "object": "product",
            "active": boolean(params, "active") if "active" in params else True,
            "created": now,
            "default_price": None,
            "description": params.get("description"),
            "images": [],
            "livemode": False,
            "marketing_features": [],
            "metadata": merged_metadata({}, params.get("metadata") or {}),
            "name": str(params["name"]),
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": None,
            "tax_details": None,
            "type": "service",
            "unit_label": params.get("unit_label"),
            "updated": now,
            "url": None,
        }
        self._store.data.products[product["id"]] = product
        self._store.dirty = True
        return product

    def retrieve_product(self, product_id: str) -> dict[str, Any]:
        with self._store.lock:
            return existing(self._store.data.products, "product", product_id)

    def list_products(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._store.lock:
            items = list(reversed(self._store.data.products.values()))
        if "active" in params:
            items = [p for p in items if p["active"] == boolean(params, "active")]
        return paginate(items, params, "/v1/products")

    # -- prices -------------------------------------------------------------------------------

    def create_price(self, params: dict[str, Any]) -> dict[str, Any]:
        reject_unemulated(params, _PRICE_PARAMS)
        currency = str(params.get("currency") or "").lower()
        if not currency:
            raise missing_param("currency")
        if params.get("billing_scheme", "per_unit") != "per_unit":
            raise _not_emulated("tiered prices", "billing_scheme")
        recurring = params.get("recurring")
        if not isinstance(recurring, dict):
            raise _not_emulated("one-time prices (pass recurring[...])", "recurring")
        unit_amount, unit_decimal = _unit_amount(params)
        interval = recurring.get("interval")
        if interval not in INTERVALS:
            raise invalid(
                f"Invalid recurring[interval]: must be one of {', '.join(INTERVALS)}",
                param="recurring[interval]",
            )
        count = int_param(recurring, "interval_count", required=False) or 1
        if not 1 <= count <= MAX_COUNT[interval]:
            raise invalid(
                "The maximum billing interval is one year.", param="recurring[interval_count]"
            )
        if recurring.get("usage_type", "licensed") != "metered":
            raise _not_emulated("licensed prices (recurring[usage_type]=metered)", "recurring")
        meter_id = recurring.get("meter")
        if not meter_id:
            raise invalid(
                "Metered prices must be backed by a meter: pass recurring[meter].",
                param="recurring[meter]",
            )
        with self._store.lock:
            if str(meter_id) not in self._store.data.meters:
                raise no_such("billing.meter", str(meter_id), param="recurring[meter]")
            product_id = self._product_for(params)
            price: dict[str, Any] = {
                "id": new_id("price_", 24),
                "object": "price",
                "active": boolean(params, "active") if "active" in params else True,
                "billing_scheme": "per_unit",
                "created": self._store.clock.now(),
                "currency": currency,
                "custom_unit_amount": None,
                "livemode": False,
                "lookup_key": params.get("lookup_key"),
                "metadata": merged_metadata({}, params.get("metadata") or {}),
                "nickname": params.get("nickname"),
                "product": product_id,
                "recurring": {
                    "interval": interval,
                    "interval_count": count,
                    "meter": str(meter_id),
                    "trial_period_days": None,
                    "usage_type": "metered",
                },
                "tax_behavior": "unspecified",
                "tiers_mode": None,
                "transform_quantity": None,
                "type": "recurring",
                "unit_amount": unit_amount,
                "unit_amount_decimal": unit_decimal,
            }
            self._store.data.prices[price["id"]] = price
            self._store.dirty = True
            return price

    def _product_for(self, params: dict[str, Any]) -> str:
        """`product` (an existing id) or `product_data[name]` (a new product), not both."""
        product, data = params.get("product"), params.get("product_data")
        if product and data:
            raise invalid("You may only specify one of product and product_data.", param="product")
        if isinstance(data, dict):
            if not data.get("name"):
                raise missing_param("product_data[name]")
            new: str = self._new_product(data)["id"]
            return new
        if not product:
            raise missing_param("product")
        if str(product) not in self._store.data.products:
            raise no_such("product", str(product), param="product")
        return str(product)

    def retrieve_price(self, price_id: str) -> dict[str, Any]:
        with self._store.lock:
            return existing(self._store.data.prices, "price", price_id)

    def find_price(self, price_id: str) -> dict[str, Any] | None:
        with self._store.lock:
            return self._store.data.prices.get(price_id)

    def list_prices(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._store.lock:
            items = list(reversed(self._store.data.prices.values()))
        if params.get("product"):
            items = [p for p in items if p["product"] == params["product"]]
        if "active" in params:
            items = [p for p in items if p["active"] == boolean(params, "active")]
        if params.get("type"):
            items = [p for p in items if p["type"] == params["type"]]
        return paginate(items, params, "/v1/prices")


def _unit_amount(params: dict[str, Any]) -> tuple[int | None, str]:
    """Exactly one of `unit_amount` (integer ≥ 0) and `unit_amount_decimal` (≤ 12 places)."""
    if ("unit_amount" in params) == ("unit_amount_decimal" in params):
        raise invalid(
            "You must pass exactly one of unit_amount and unit_amount_decimal.",
            param="unit_amount",
        )
    if "unit_amount" in params:
        amount = int_param(params, "unit_amount")
        if amount is None or amount < 0:
            raise invalid("unit_amount must be a non-negative integer.", param="unit_amount")
        return amount, str(amount)
    raw = str(params["unit_amount_decimal"])
    try:
        decimal = Decimal(raw)
    except InvalidOperation:
        raise invalid(f"Invalid decimal: {raw}", param="unit_amount_decimal") from None
    exponent = decimal.as_tuple().exponent
    if not decimal.is_finite() or decimal < 0 or (isinstance(exponent, int) and exponent < -12):
        raise invalid(
            "unit_amount_decimal must be non-negative with at most 12 decimal places.",
            param="unit_amount_decimal",
        )
    return (int(decimal) if decimal == decimal.to_integral_value() else None), raw
