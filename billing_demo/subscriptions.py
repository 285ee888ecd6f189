"""Give the seeded paying organizations real subscriptions in a test-mode Stripe account or the
emulator, so the webhook flow fills `subscriptions` from Stripe's own events.

The seed writes what an application writes before checkout: a row per paying organization with
its start and no Stripe ids. For each such row this creates, through the official SDK, a
customer and a subscription with one metered price per declared meter, backdated to the row's
start (so every seeded day is billable) and naming the organization in
`metadata.organization_id`, which is how the webhook flow links a subscription it has not seen
(billing_pipeline/webhooks/linking.py). Nothing here writes the Stripe ids into the row: the
`customer.subscription.created` event does, when the processing job applies it.

The lowest paying organization is billed on the calendar (periods from 00:00 UTC on the 1st,
a common Stripe setup), the others on their start's day of the month at 12:00 UTC, so a demo
shows both period ends the pipeline must handle. Never used with live keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stripe
from sqlalchemy import Engine, text

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.meter_sync import verify_meters
from billing_pipeline.usage.meters import Meter

# What the demo charges per unit of each meter's period aggregate, in cents: an active sensor
# (`last`: those active at the period's end) costs $2 a month, a thousand readings 10 cents.
UNIT_AMOUNT_DECIMAL = {"active_sensors": "200", "temperature_readings": "0.01"}
CATALOG_KEY = "billing_pipeline_meter"
CALENDAR = {"day_of_month": 1, "hour": 0, "minute": 0, "second": 0}
MIDDAY_HOUR = 12


@dataclass(frozen=True)
class DemoSubscription:
    organization_id: int
    customer: str
    subscription: str


@dataclass(frozen=True)
class DemoResult:
    created: list[DemoSubscription]
    kept: list[DemoSubscription]

    @property
    def all(self) -> list[DemoSubscription]:
        return sorted([*self.created, *self.kept], key=lambda s: s.organization_id)


def anchor_config(organization_id: int, started_at: datetime, calendar_org: int) -> Any:
    """Calendar billing for `calendar_org`; the start's day of the month at noon UTC otherwise."""
    if organization_id == calendar_org:
        return dict(CALENDAR)
    return {"day_of_month": started_at.day, "hour": MIDDAY_HOUR, "minute": 0, "second": 0}


def ensure_prices(stripe_billing: StripeBilling, meters: list[Meter]) -> dict[str, str]:
    """A product and a monthly metered price per meter, on the Stripe meter; created once.

    Found again on a restart by the product's `metadata.billing_pipeline_meter`."""
    client = stripe_billing.client
    remote = verify_meters(stripe_billing, meters)
    products = {}
    for product in client.v1.products.list({"limit": 100}).auto_paging_iter():
        if meter_name := (product.to_dict().get("metadata") or {}).get(CATALOG_KEY):
            products[meter_name] = product
    prices: dict[str, str] = {}
    for meter in meters:
        meter_id = remote[meter.name].id
        product = products.get(meter.name) or client.v1.products.create(
            {"name": meter.display_name, "metadata": {CATALOG_KEY: meter.name}}
        )
        existing = [
            price
            for price in client.v1.prices.list({"product": product.id, "active": True}).data
            if price.recurring is not None and price.recurring.meter == meter_id
        ]
        if existing:
            prices[meter.name] = existing[0].id
            continue
        params: Any = {
            "currency": "usd",
            "product": product.id,
            "unit_amount_decimal": UNIT_AMOUNT_DECIMAL.get(meter.name, "1"),
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
        }
        prices[meter.name] = client.v1.prices.create(params).id
    return prices


def _known(client: stripe.StripeClient, subscription_id: str) -> bool:
    try:
        client.v1.subscriptions.retrieve(subscription_id)
    except stripe.InvalidRequestError as error:
        if error.http_status != 404:
            raise
        return False
    return True


def _forget_stripe_ids(engine: Engine, row_id: int) -> None:
    """Back to a row before checkout: Stripe no longer holds its subscription (a deleted emulator
    state, or the made-up ids of an older seed), so the demo subscribes the organization anew."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                UPDATE subscriptions
                SET stripe_subscription_id = NULL, stripe_customer_id = NULL,
                    status = 'incomplete', current_period_start = NULL,
                    current_period_end = NULL, cancel_at_period_end = false, cancel_at = NULL,
                    canceled_at = NULL, ended_at = NULL, latest_invoice_id = NULL,
                    payment_status = NULL, state_event_created = NULL,
                    payment_event_created = NULL, updated_at = now()
                WHERE id = :id
                """
            ),
            {"id": row_id},
        )


def create_demo_subscriptions(
    engine: Engine, stripe_billing: StripeBilling, meters: list[Meter]
) -> DemoResult:
    """Subscribe every paying organization whose subscription Stripe does not hold yet.

    Idempotency keys name the organization and its start, so a run interrupted between Stripe's
    answer and the webhook flow's link does not subscribe anyone twice.
    """
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                """
                SELECT s.id, s.organization_id, s.started_at, s.stripe_customer_id,
                       s.stripe_subscription_id, o.name
                FROM subscriptions s JOIN organizations o ON o.id = s.organization_id
                WHERE s.ended_at IS NULL AND s.started_at IS NOT NULL
                ORDER BY s.organization_id, s.id
                """
            )
        ).all()
    client = stripe_billing.client
    created: list[DemoSubscription] = []
    kept: list[DemoSubscription] = []
    prices: dict[str, str] | None = None
    calendar_org = rows[0].organization_id if rows else 0
    for row in rows:
        if row.stripe_subscription_id is not None:
            if _known(client, row.stripe_subscription_id):
                kept.append(
                    DemoSubscription(
                        row.organization_id, row.stripe_customer_id, row.stripe_subscription_id
                    )
                )
                continue
            _forget_stripe_ids(engine, row.id)
        prices = prices or ensure_prices(stripe_billing, meters)
        key = f"demo-{row.organization_id}-{int(row.started_at.timestamp())}"
        organization = {"organization_id": str(row.organization_id)}
        customer = client.v1.customers.create(
            {"name": row.name, "metadata": organization},
            {"idempotency_key": f"{key}-customer"},
        )
        params: Any = {
            "customer": customer.id,
            "items": [{"price": price} for price in prices.values()],
            "backdate_start_date": int(row.started_at.timestamp()),
            "billing_cycle_anchor_config": anchor_config(
                row.organization_id, row.started_at, calendar_org
            ),
            "metadata": organization,
        }
        subscription = client.v1.subscriptions.create(
            params, {"idempotency_key": f"{key}-subscription"}
        )
        created.append(DemoSubscription(row.organization_id, customer.id, subscription.id))
    return DemoResult(created=created, kept=kept)
