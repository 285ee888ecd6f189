"""Tying invoice lines to meters without a Stripe read per customer (real emulator, real DB)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from billing_pipeline.stripe_reporting.invoice_usage import price_meters
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.invoicing import metered_price
from billing_pipeline_tests.support.stripe import TEST_KEY, make_client


def test_prices_a_subscription_lists_cost_no_stripe_call_and_others_one_each(
    billing: Billing,
) -> None:
    client = make_client(billing.api_base, TEST_KEY)
    meter = billing.stripe_billing.list_meters()[0]
    listed = [metered_price(client, meter.id, f"Customer {n}") for n in range(20)]
    retired = metered_price(client, meter.id, "Retired")
    with billing.engine.begin() as connection:
        # What the webhook flow records from each subscription's `customer.subscription.*`.
        connection.execute(
            text(
                "INSERT INTO billing.subscription_prices (stripe_subscription_id, "
                "stripe_price_id, stripe_meter_id, event_created) "
                "VALUES (:sub, :price, :meter, :at)"
            ),
            [
                {"sub": f"sub_{n}", "price": p.id, "meter": meter.id, "at": datetime.now(UTC)}
                for n, p in enumerate(listed)
            ],
        )
    before = sum(billing.emulator.request_count().values())
    with billing.engine.connect() as connection:
        found = price_meters(
            connection, billing.stripe_billing, [p.id for p in listed] + [retired.id]
        )
    # 21 prices on invoices: the 20 a subscription lists are known here; only the price no
    # subscription lists any more (an item replaced since) is asked of Stripe.
    assert found == {p.id: meter.id for p in [*listed, retired]}
    assert sum(billing.emulator.request_count().values()) - before == 1
