"""Give seeded demo subscriptions real customers in a test-mode Stripe account or the emulator.

Seeded data carries made-up customer ids; Stripe assigns ids itself, so the demo creates each
customer once and stores the id Stripe returned. Never used with live keys.
"""

from __future__ import annotations

import stripe
from sqlalchemy import Engine, text

from billing_pipeline.stripe_client import StripeBilling


def create_missing_customers(engine: Engine, stripe_billing: StripeBilling) -> int:
    with engine.connect() as connection:
        subscriptions = connection.execute(
            text(
                "SELECT s.id, s.organization_id, s.stripe_customer_id, o.name "
                "FROM subscriptions s JOIN organizations o ON o.id = s.organization_id "
                "WHERE s.stripe_customer_id IS NOT NULL ORDER BY s.id"
            )
        ).all()
    created = 0
    customers = stripe_billing.client.v1.customers
    for subscription in subscriptions:
        try:
            customers.retrieve(subscription.stripe_customer_id)
            continue
        except stripe.InvalidRequestError as error:
            if error.http_status != 404:
                raise
        customer = customers.create(
            {
                "name": subscription.name,
                "metadata": {"organization_id": str(subscription.organization_id)},
            }
        )
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE subscriptions SET stripe_customer_id = :customer WHERE id = :id"),
                {"customer": customer.id, "id": subscription.id},
            )
        created += 1
    return created
