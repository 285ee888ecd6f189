"""Billing-period helpers: metered prices, test clocks moved as Stripe's contract says, and a
log of the usage a test sent, from which it computes what each invoice must bill."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import stripe

# Calendar billing as most Stripe accounts set it up: periods start at 00:00 UTC on the 1st.
CALENDAR_ANCHOR: Any = {"day_of_month": 1, "hour": 0, "minute": 0, "second": 0}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


def metered_price(
    client: stripe.StripeClient, meter_id: str, product_name: str, **amount: Any
) -> Any:
    """A monthly metered price on `meter_id`; `amount` is `unit_amount=` or
    `unit_amount_decimal=` (default: 3 minor units per unit)."""
    params: Any = {
        "currency": "usd",
        "product_data": {"name": product_name},
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
        **(amount or {"unit_amount": 3}),
    }
    return client.v1.prices.create(params)


def price_for_event(client: stripe.StripeClient, event_name: str) -> str:
    """A new monthly metered price on the meter of `event_name` (made if Stripe has none yet):
    a subscription item must name a price Stripe knows."""
    meters = client.v1.billing.meters.list({"limit": 100}).data
    meter = next((m for m in meters if m.event_name == event_name), None)
    if meter is None:
        meter = client.v1.billing.meters.create(
            {
                "display_name": event_name,
                "event_name": event_name,
                "default_aggregation": {"formula": "sum"},
            }
        )
    price_id: str = metered_price(client, meter.id, event_name).id
    return price_id


def advance_test_clock(client: stripe.StripeClient, clock_id: str, frozen_time: int) -> Any:
    """Advance, then wait for `ready` as a client of Stripe must (the advance answers
    `advancing`)."""
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": frozen_time})
    for _ in range(100):
        clock = client.v1.test_helpers.test_clocks.retrieve(clock_id)
        if clock.status == "ready":
            return clock
        time.sleep(0.05)
    raise AssertionError(f"test clock {clock_id} never became ready")


@dataclass(frozen=True)
class SentUsage:
    customer: str
    timestamp: int
    value: int
    received_at: int


@dataclass
class UsageLog:
    """The meter events a test sent, with the customer time each one arrived at."""

    event_name: str
    sent: list[SentUsage] = field(default_factory=list)

    def send(
        self,
        client: stripe.StripeClient,
        customer: str,
        value: int,
        timestamp: int,
        received_at: int,
    ) -> None:
        """Send one event; `received_at` is the customer's now (its test clock's time)."""
        client.v1.billing.meter_events.create(
            {
                "event_name": self.event_name,
                "payload": {"stripe_customer_id": customer, "value": str(value)},
                "timestamp": timestamp,
                "identifier": f"{customer}-{timestamp}-{len(self.sent)}",
            }
        )
        self.sent.append(SentUsage(customer, timestamp, value, received_at))

    def billable(self, customer: str, start: int, end: int, finalized_at: int) -> list[SentUsage]:
        """What Stripe bills for [start, end): events of that period received before its
        invoice's finalization, in arrival order."""
        return [
            usage
            for usage in self.sent
            if usage.customer == customer
            and start <= usage.timestamp < end
            and usage.received_at < finalized_at
        ]

    def total(self, customer: str, start: int, end: int, finalized_at: int) -> int:
        """A `sum` meter's quantity for the period, negative totals billed as 0."""
        return max(0, sum(u.value for u in self.billable(customer, start, end, finalized_at)))

    def last(self, customer: str, start: int, end: int, finalized_at: int) -> int:
        """A `last` meter's quantity: the latest timestamp's value in the period."""
        billable = self.billable(customer, start, end, finalized_at)
        return max(0, max(billable, key=lambda u: u.timestamp).value) if billable else 0
