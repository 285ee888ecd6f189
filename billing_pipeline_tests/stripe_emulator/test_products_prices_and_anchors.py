"""Products, metered prices and billing cycle anchors, through the official SDK over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import stripe

from billing_pipeline_tests.support.invoicing import CALENDAR_ANCHOR, metered_price, utc
from billing_pipeline_tests.support.stripe import NOON
from stripe_emulator import EmulatorControl


def test_products_and_metered_prices_have_stripes_shape(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    meter = make_meter("readings", "sum")
    product = stripe_client.v1.products.create({"name": "Sensor readings"})
    price = stripe_client.v1.prices.create(
        {
            "currency": "EUR",
            "product": product.id,
            "unit_amount_decimal": Decimal("0.125"),
            "recurring": {
                "interval": "week",
                "interval_count": 2,
                "usage_type": "metered",
                "meter": meter.id,
            },
        }
    )
    assert (price.object, price.type, price.currency, price.product) == (
        "price",
        "recurring",
        "eur",
        product.id,
    )
    assert (price.unit_amount, price.unit_amount_decimal) == (None, Decimal("0.125"))
    assert price.recurring is not None
    assert price.recurring.to_dict() == {
        "interval": "week",
        "interval_count": 2,
        "meter": meter.id,
        "trial_period_days": None,
        "usage_type": "metered",
    }
    inline = metered_price(stripe_client, meter.id, "Inline product", unit_amount=7)
    assert (inline.unit_amount, inline.unit_amount_decimal) == (7, Decimal(7))
    assert stripe_client.v1.products.retrieve(inline.product).name == "Inline product"
    assert [p.id for p in stripe_client.v1.prices.list({"product": product.id}).data] == [price.id]
    assert len(stripe_client.v1.products.list().data) == 2
    assert stripe_client.v1.prices.retrieve(price.id).to_dict() == price.to_dict()


@pytest.mark.parametrize(
    ("recurring", "top", "param"),
    [
        ({"meter": None}, {}, "recurring[meter]"),
        ({"meter": "mtr_missing"}, {}, "recurring[meter]"),
        ({"usage_type": None}, {}, "recurring"),  # licensed, Stripe's default
        ({"interval": "fortnight"}, {}, "recurring[interval]"),
        ({"interval_count": 13}, {}, "recurring[interval_count]"),
        (
            {},
            {"unit_amount": None, "unit_amount_decimal": "0.1234567890123"},
            "unit_amount_decimal",
        ),
        ({}, {"unit_amount_decimal": "1"}, "unit_amount"),
        ({}, {"currency": None}, "currency"),
    ],
)
def test_a_price_the_emulator_cannot_bill_is_refused_naming_the_parameter(
    stripe_client: stripe.StripeClient,
    make_meter: Callable[..., Any],
    recurring: dict[str, Any],
    top: dict[str, Any],
    param: str,
) -> None:
    def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
        """`base` with `change` applied; None removes a key."""
        both = {**base, **change}
        return {key: value for key, value in both.items() if value is not None}

    meter = make_meter("readings", "sum")
    metered = {"interval": "month", "usage_type": "metered", "meter": meter.id}
    base = {"currency": "usd", "product_data": {"name": "Readings"}, "unit_amount": 3}
    params: Any = {**merged(base, top), "recurring": merged(metered, recurring)}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.prices.create(params)
    assert refused.value.param == param


def test_billing_cycle_anchors_shape_the_first_and_later_periods(
    stripe_client: stripe.StripeClient,
    emulator_at_noon: EmulatorControl,
    make_meter: Callable[..., Any],
) -> None:
    price = metered_price(stripe_client, make_meter("readings", "sum").id, "Readings")
    customer = stripe_client.v1.customers.create({"name": "Acme"}).id

    def subscribe(**params: Any) -> Any:
        create: Any = {"customer": customer, "items": [{"price": price.id}], **params}
        return stripe_client.v1.subscriptions.create(create)

    def period(subscription: Any) -> tuple[int, int]:
        item = subscription["items"].data[0]
        return item.current_period_start, item.current_period_end

    # The emulator clock is at 2025-06-15 12:00 UTC.
    calendar = subscribe(billing_cycle_anchor_config=CALENDAR_ANCHOR)
    assert period(calendar) == (NOON, utc(2025, 7, 1))
    assert calendar.billing_cycle_anchor_config.day_of_month == 1
    assert calendar["items"].data[0].price.id == price.id
    assert calendar["items"].data[0].price.recurring.meter == price.recurring.meter
    month_end = subscribe(billing_cycle_anchor_config={"day_of_month": 31, "hour": 18})
    assert period(month_end) == (NOON, utc(2025, 6, 30, 18))
    midday = subscribe(billing_cycle_anchor=utc(2025, 6, 20, 15))
    assert (midday.billing_cycle_anchor, period(midday)) == (
        utc(2025, 6, 20, 15),
        (NOON, utc(2025, 6, 20, 15)),
    )
    assert period(subscribe()) == (NOON, utc(2025, 7, 15, 12))
    for wrong in (
        {"billing_cycle_anchor": NOON - 1},
        {"billing_cycle_anchor": utc(2025, 7, 15, 12, 0, 1)},
        {"billing_cycle_anchor_config": {"day_of_month": 32}},
        {"billing_cycle_anchor_config": {"hour": 3}},
    ):
        with pytest.raises(stripe.InvalidRequestError):
            subscribe(**wrong)
    weekly = stripe_client.v1.prices.create(
        {
            "currency": "usd",
            "product": stripe_client.v1.products.retrieve(price.product).id,
            "unit_amount": 1,
            "recurring": {
                "interval": "week",
                "usage_type": "metered",
                "meter": price.recurring.meter,
            },
        }
    )
    with pytest.raises(stripe.InvalidRequestError, match="interval"):
        subscribe(items=[{"price": price.id}, {"price": weekly.id}])

    # Later periods run from anchor to anchor: the 31st where the month has one.
    emulator_at_noon.set_clock(utc(2025, 8, 1))
    renewed = stripe_client.v1.subscriptions.retrieve(month_end.id)
    assert period(renewed) == (utc(2025, 7, 31, 18), utc(2025, 8, 31, 18))
    assert period(stripe_client.v1.subscriptions.retrieve(calendar.id)) == (
        utc(2025, 8, 1),
        utc(2025, 9, 1),
    )
