"""`backdate_start_date` (Stripe's "Backdate subscriptions"), through the official SDK over HTTP:
a subscription that started before it was created bills its usage from that start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe

from billing_pipeline_tests.support.invoicing import (
    CALENDAR_ANCHOR,
    UsageLog,
    metered_price,
    utc,
)
from billing_pipeline_tests.support.stripe import NOON
from stripe_emulator import EmulatorControl

HOUR = 3600


def test_a_backdated_subscription_bills_from_its_start_on_its_first_invoice(
    stripe_client: stripe.StripeClient,
    emulator_at_noon: EmulatorControl,
    make_meter: Callable[..., Any],
) -> None:
    # The emulator clock is at 2025-06-15 12:00 UTC; the subscription started on June 3rd.
    price = metered_price(stripe_client, make_meter("readings", "sum").id, "Readings")
    customer = stripe_client.v1.customers.create({"name": "Acme"}).id
    usage = UsageLog("readings")
    usage.send(stripe_client, customer, 5, utc(2025, 6, 2, 23), NOON)  # before the start
    usage.send(stripe_client, customer, 40, utc(2025, 6, 3, 9), NOON)
    usage.send(stripe_client, customer, 2, utc(2025, 6, 15, 11), NOON)
    started = utc(2025, 6, 3, 8)

    subscription = stripe_client.v1.subscriptions.create(
        {
            "customer": customer,
            "items": [{"price": price.id}],
            "backdate_start_date": started,
            "billing_cycle_anchor_config": CALENDAR_ANCHOR,
        }
    )
    item = subscription["items"].data[0]
    assert (subscription.start_date, subscription.created) == (started, NOON)
    assert (item.current_period_start, item.current_period_end) == (started, utc(2025, 7, 1))
    assert subscription.billing_cycle_anchor == utc(2025, 7, 1)

    emulator_at_noon.set_clock(utc(2025, 7, 1) + HOUR + 60)
    [invoice] = stripe_client.v1.invoices.list({"subscription": subscription.id}).data
    assert (invoice.period_start, invoice.period_end, invoice.status) == (
        started,
        utc(2025, 7, 1),
        "paid",
    )
    expected = usage.total(customer, started, utc(2025, 7, 1), utc(2025, 7, 1) + HOUR)
    assert invoice.lines.data[0].quantity == expected == 42
    renewed = stripe_client.v1.subscriptions.retrieve(subscription.id)["items"].data[0]
    assert (renewed.current_period_start, renewed.current_period_end) == (
        utc(2025, 7, 1),
        utc(2025, 8, 1),
    )


@pytest.mark.parametrize(
    "params",
    [
        {"backdate_start_date": NOON, "billing_cycle_anchor_config": CALENDAR_ANCHOR},
        {"backdate_start_date": NOON + HOUR, "billing_cycle_anchor": utc(2025, 7, 1)},
        # Stripe would invoice the backdated time at once: not emulated, said so.
        {"backdate_start_date": NOON - HOUR},
    ],
)
def test_a_backdate_in_the_future_or_without_an_anchor_is_refused(
    stripe_client: stripe.StripeClient,
    emulator_at_noon: EmulatorControl,
    make_meter: Callable[..., Any],
    params: dict[str, Any],
) -> None:
    price = metered_price(stripe_client, make_meter("readings", "sum").id, "Readings")
    customer = stripe_client.v1.customers.create({"name": "Acme"}).id
    create: Any = {"customer": customer, "items": [{"price": price.id}], **params}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.subscriptions.create(create)
    assert refused.value.param == "backdate_start_date"
    assert stripe_client.v1.subscriptions.list().data == []
