"""The JSON shapes of an invoice's parts (API reference `invoice`, `invoice line item`, basil:
each line's price under `pricing.price_details`, its subscription item under `parent`)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from stripe_emulator.ids import new_id

# Invoice fields for features the emulator has none of (tax ids, shipping, credit notes, …).
EMPTY_FIELDS: dict[str, Any] = dict.fromkeys(
    [
        "account_tax_ids",
        "application",
        "custom_fields",
        "customer_account",
        "customer_address",
        "customer_phone",
        "customer_shipping",
        "default_source",
        "footer",
        "from_invoice",
        "latest_revision",
        "on_behalf_of",
        "receipt_number",
        "rendering",
        "shipping_cost",
        "shipping_details",
        "statement_descriptor",
        "total_pretax_credit_amounts",
        "status_details",
        "threshold_reason",
    ]
) | {
    "amount_paid_off_stripe": 0,
    # Stripe always renders payment settings; none are set, as nothing here takes payments.
    "payment_settings": {
        "default_mandate": None,
        "payment_method_options": None,
        "payment_method_types": None,
    },
    "customer_tax_exempt": "none",
    "customer_tax_ids": [],
    "default_tax_rates": [],
    "post_payment_credit_notes_amount": 0,
    "pre_payment_credit_notes_amount": 0,
}


def line_amount(quantity: int, unit_amount_decimal: str) -> int:
    """quantity x unit price in minor units, rounded half up to a whole unit."""
    exact = Decimal(quantity) * Decimal(unit_amount_decimal)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def line_item(
    invoice_id: str,
    subscription: dict[str, Any],
    item: dict[str, Any],
    price: dict[str, Any],
    period: tuple[int, int],
) -> dict[str, Any]:
    """A metered line with no usage yet: `Invoices` measures it."""
    return {
        "id": new_id("il_", 24),
        "object": "line_item",
        "amount": 0,
        "currency": price["currency"],
        "description": None,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription["id"],
                "subscription_item": item["id"],
            },
        },
        "period": {"end": period[1], "start": period[0]},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]},
            "type": "price_details",
            "unit_amount_decimal": price["unit_amount_decimal"],
        },
        "quantity": 0,
        "quantity_decimal": "0",
        "subscription": subscription["id"],
        "subtotal": 0,
        "taxes": [],
    }
