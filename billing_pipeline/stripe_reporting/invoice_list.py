"""`billing-pipeline stripe invoices`: what Stripe invoiced, line by line, read from Stripe.

What a customer pays is an invoice line, not a daily summary: this lists Stripe's invoices
(`GET /v1/invoices`, newest first) with each metered line's period quantity and amount, so an
operator can compare them with `billing-pipeline status`. Read-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.text_tables import text_table

HEADER = ("NUMBER", "CUSTOMER", "PERIOD START", "PERIOD END", "STATUS", "LINE", "QUANTITY")
AMOUNT = "AMOUNT"


def money(minor_units: int, currency: str) -> str:
    """Minor units as a decimal amount with its currency, e.g. 1234 usd -> 12.34 USD."""
    return f"{Decimal(minor_units).scaleb(-2):.2f} {currency.upper()}"


def price_amount(quantity: int, unit_amount_decimal: Decimal | str) -> int:
    """What `quantity` units cost at a per-unit price in minor units (Stripe's
    `unit_amount_decimal`), rounded half up to a whole minor unit as Stripe rounds a line."""
    exact = Decimal(quantity) * Decimal(unit_amount_decimal)
    return int(exact.quantize(Decimal(1), ROUND_HALF_UP))


def _time(unix: int | None) -> datetime | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC)


def _line_name(client: Any, line: Any, names: dict[str, str]) -> str:
    """The line's product name (looked up once per product), else its price id."""
    fields = line.to_dict()
    details = (fields.get("pricing") or {}).get("price_details") or {}
    product, price = details.get("product"), details.get("price")
    if product is None:
        return str(price or fields.get("description") or fields.get("id"))
    if product not in names:
        names[product] = client.v1.products.retrieve(product).name
    return names[product]


def invoice_rows(
    stripe_billing: StripeBilling, customer: str | None = None, limit: int = 20
) -> Iterator[tuple[object, ...]]:
    """One row per invoice line and a `total` row per invoice, newest invoice first."""
    client = stripe_billing.client
    params: Any = {"limit": min(limit, 100)}
    if customer:
        params["customer"] = customer
    names: dict[str, str] = {}
    invoices = client.v1.invoices.list(params).auto_paging_iter()
    for count, invoice in enumerate(invoices):
        if count >= limit:
            return
        head = (
            invoice.number,
            invoice.customer,
            _time(invoice.period_start),
            _time(invoice.period_end),
            invoice.status,
        )
        for line in invoice.lines.auto_paging_iter():
            name = _line_name(client, line, names)
            yield (*head, name, line.quantity, money(line.amount, line.currency))
        yield (*head, "total", None, money(invoice.total, invoice.currency))


def format_invoices(
    stripe_billing: StripeBilling, customer: str | None = None, limit: int = 20
) -> str:
    rows = list(invoice_rows(stripe_billing, customer, limit))
    if not rows:
        who = f" for customer {customer}" if customer else ""
        return (
            f"no invoices{who} yet: Stripe makes the first at the end of a billing period "
            "(`billing-pipeline subscriptions list` shows each period's end)"
        )
    return text_table((*HEADER, AMOUNT), rows, numeric=("QUANTITY", AMOUNT))
