"""Invoices over a simulated month on a test clock, through the official SDK over HTTP.

Each invoice's quantity is checked against a total the test computes from the events it sent
(period, arrival before finalization), the way Stripe bills metered usage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe

from billing_pipeline_tests.support.invoicing import (
    CALENDAR_ANCHOR,
    UsageLog,
    advance_test_clock,
    metered_price,
    utc,
)
from stripe_emulator import EmulatorControl

START = utc(2025, 6, 10, 9, 30)
MIDDAY_ANCHOR = utc(2025, 6, 20, 15)
HOUR = 3600


def on_clock(client: stripe.StripeClient, clock_id: str, name: str) -> str:
    customer_id: str = client.v1.customers.create({"name": name, "test_clock": clock_id}).id
    return customer_id


def invoices_of(client: stripe.StripeClient, customer: str) -> list[Any]:
    """Oldest first."""
    listed = client.v1.invoices.list({"customer": customer, "limit": 100}).auto_paging_iter()
    return sorted(listed, key=lambda invoice: invoice.period_start)


class Month:
    """One test clock, a calendar-billed and a mid-day-billed customer on one `sum` price."""

    def __init__(self, client: stripe.StripeClient, make_meter: Callable[..., Any]) -> None:
        self.client = client
        meter = make_meter("readings", "sum")
        self.price = metered_price(client, meter.id, "Readings", unit_amount_decimal="0.5")
        self.clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START}).id
        self.now = START
        self.usage = UsageLog("readings")
        self.calendar = on_clock(client, self.clock, "Calendar Co")
        self.midday = on_clock(client, self.clock, "Midday Co")
        items: Any = [{"price": self.price.id}]
        self.calendar_sub = client.v1.subscriptions.create(
            {
                "customer": self.calendar,
                "items": items,
                "billing_cycle_anchor_config": CALENDAR_ANCHOR,
            }
        )
        self.midday_sub = client.v1.subscriptions.create(
            {"customer": self.midday, "items": items, "billing_cycle_anchor": MIDDAY_ANCHOR}
        )

    def to(self, frozen_time: int) -> None:
        advance_test_clock(self.client, self.clock, frozen_time)
        self.now = frozen_time

    def send(self, customer: str, value: int, timestamp: int) -> None:
        self.usage.send(self.client, customer, value, timestamp, received_at=self.now)


def test_calendar_and_midday_periods_bill_what_arrived_before_finalization(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    month = Month(stripe_client, make_meter)
    calendar, midday = month.calendar, month.midday
    first = month.calendar_sub["items"].data[0]
    assert (first.current_period_start, first.current_period_end) == (START, utc(2025, 7, 1))
    assert month.calendar_sub.billing_cycle_anchor == utc(2025, 7, 1)
    assert month.calendar_sub.test_clock == month.clock
    assert month.midday_sub["items"].data[0].current_period_end == MIDDAY_ANCHOR

    month.to(utc(2025, 7, 10, 12))
    month.send(calendar, 5, utc(2025, 7, 1))  # the first instant of July's period
    month.send(calendar, 100, utc(2025, 6, 30, 23, 59, 59))  # June's invoice is final: lost
    month.send(midday, 7, utc(2025, 7, 1))  # June 20 - July 20 period, not final yet
    month.to(utc(2025, 7, 31, 23))
    month.send(calendar, 11, utc(2025, 7, 31, 22, 59))
    month.send(midday, 13, utc(2025, 7, 20, 14, 59, 59))  # its invoice finalized at 16:00
    month.send(midday, 17, utc(2025, 7, 20, 15))

    # The period ended at 00:00; the draft waits for the 1 h grace period.
    month.to(utc(2025, 8, 1, 0, 30))
    july = invoices_of(stripe_client, calendar)[-1]
    assert (july.status, july.period_start, july.period_end) == (
        "draft",
        utc(2025, 7, 1),
        utc(2025, 8, 1),
    )
    assert july.automatically_finalizes_at == utc(2025, 8, 1, 1)
    assert july.number is None
    month.send(calendar, 19, utc(2025, 7, 31, 23, 59, 59))  # during the grace period: billed
    month.to(utc(2025, 8, 1, 1, 30))
    month.send(calendar, 23, utc(2025, 7, 31, 23, 59, 30))  # after finalization: on no invoice

    month.to(utc(2025, 8, 20, 15, 30))
    month.send(midday, 29, utc(2025, 8, 20, 14, 59, 59))  # grace period of the mid-day period
    month.to(utc(2025, 8, 20, 16, 30))
    month.send(midday, 31, utc(2025, 8, 20, 15, 10))  # the next period
    month.send(midday, 37, utc(2025, 8, 20, 14))  # after finalization

    calendar_invoices = invoices_of(stripe_client, calendar)
    midday_invoices = invoices_of(stripe_client, midday)
    assert [(i.period_start, i.period_end) for i in calendar_invoices] == [
        (START, utc(2025, 7, 1)),
        (utc(2025, 7, 1), utc(2025, 8, 1)),
    ]
    assert [(i.period_start, i.period_end) for i in midday_invoices] == [
        (START, MIDDAY_ANCHOR),
        (MIDDAY_ANCHOR, utc(2025, 7, 20, 15)),
        (utc(2025, 7, 20, 15), utc(2025, 8, 20, 15)),
    ]
    for invoice in calendar_invoices + midday_invoices:
        finalized_at = invoice.status_transitions.finalized_at
        assert (invoice.status, finalized_at) == ("paid", invoice.period_end + HOUR)
        expected = month.usage.total(
            invoice.customer, invoice.period_start, invoice.period_end, finalized_at
        )
        [line] = invoice.lines.data
        assert (line.quantity, line.amount) == (expected, (expected + 1) // 2)  # half up
        assert line.period.start == invoice.period_start
        assert line.pricing.price_details.price == month.price.id
        assert invoice.amount_paid == invoice.total == line.amount
        assert invoice.parent.subscription_details.subscription in (
            month.calendar_sub.id,
            month.midday_sub.id,
        )
    # The cases above, spelled out: the closing day and the grace-period arrival are billed.
    assert [i.lines.data[0].quantity for i in calendar_invoices] == [0, 5 + 11 + 19]
    assert [i.lines.data[0].quantity for i in midday_invoices] == [0, 7, 17 + 29]
    assert calendar_invoices[1].amount_due == 18  # 35 x 0.5 = 17.5, rounded half up
    assert [i.number for i in calendar_invoices] == [
        f"{calendar_invoices[0].number[:-5]}-0001",
        f"{calendar_invoices[0].number[:-5]}-0002",
    ]
    renewed = stripe_client.v1.subscriptions.retrieve(month.calendar_sub.id)
    item = renewed["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (
        utc(2025, 8, 1),
        utc(2025, 9, 1),
    )
    assert renewed.latest_invoice == calendar_invoices[-1].id
    lines = stripe_client.v1.invoices.line_items.list(calendar_invoices[1].id)
    assert [line.id for line in lines.data] == [calendar_invoices[1].lines.data[0].id]
    assert stripe_client.v1.invoices.retrieve(calendar_invoices[1].id).to_dict() == (
        calendar_invoices[1].to_dict()
    )


def test_a_last_meter_bills_the_value_at_the_periods_end(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    meter = make_meter("active_sensors", "last")
    price = metered_price(stripe_client, meter.id, "Active sensors", unit_amount=200)
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": START}).id
    customer = on_clock(stripe_client, clock, "Gauge Co")
    stripe_client.v1.subscriptions.create(
        {
            "customer": customer,
            "items": [{"price": price.id}],
            "billing_cycle_anchor_config": CALENDAR_ANCHOR,
        }
    )
    usage = UsageLog("active_sensors")
    advance_test_clock(stripe_client, clock, utc(2025, 7, 20))
    usage.send(stripe_client, customer, 4, utc(2025, 7, 5), utc(2025, 7, 20))
    usage.send(stripe_client, customer, 6, utc(2025, 7, 19), utc(2025, 7, 20))
    advance_test_clock(stripe_client, clock, utc(2025, 8, 1, 0, 10))
    usage.send(stripe_client, customer, 5, utc(2025, 7, 31, 23), utc(2025, 8, 1, 0, 10))
    usage.send(stripe_client, customer, 9, utc(2025, 8, 1), utc(2025, 8, 1, 0, 10))
    advance_test_clock(stripe_client, clock, utc(2025, 8, 1, 2))
    # A late correction of the last day, after finalization, changes nothing billed.
    usage.send(stripe_client, customer, 8, utc(2025, 7, 31, 23, 30), utc(2025, 8, 1, 2))

    july = invoices_of(stripe_client, customer)[-1]
    expected = usage.last(customer, utc(2025, 7, 1), utc(2025, 8, 1), utc(2025, 8, 1, 1))
    assert expected == 5
    assert (july.period_start, july.status) == (utc(2025, 7, 1), "paid")
    assert (july.lines.data[0].quantity, july.total) == (expected, expected * 200)


def test_the_grace_period_is_the_accounts_setting(
    stripe_client: stripe.StripeClient,
    emulator_at_noon: EmulatorControl,
    make_meter: Callable[..., Any],
) -> None:
    month = Month(stripe_client, make_meter)
    assert emulator_at_noon.set_invoice_grace_period(6 * HOUR) == 6 * HOUR
    month.to(utc(2025, 7, 1, 5))
    month.send(month.calendar, 3, utc(2025, 6, 30, 20))
    month.to(utc(2025, 7, 1, 7))
    [june] = invoices_of(stripe_client, month.calendar)
    assert june.status_transitions.finalized_at == utc(2025, 7, 1, 6)
    assert june.lines.data[0].quantity == 3
    # Stripe allows up to 72 hours.
    with pytest.raises(ValueError, match="72 hours"):
        emulator_at_noon.set_invoice_grace_period(72 * HOUR + 1)
    emulator_at_noon.reset()
    assert emulator_at_noon.set_invoice_grace_period(HOUR) == HOUR


def test_a_test_clock_is_the_customers_time(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    month = Month(stripe_client, make_meter)
    clock = stripe_client.v1.test_helpers.test_clocks.retrieve(month.clock)
    assert (clock.status, clock.frozen_time, clock.object) == (
        "ready",
        START,
        "test_helpers.test_clock",
    )
    customer = stripe_client.v1.customers.retrieve(month.calendar)
    assert (customer.test_clock, customer.created) == (month.clock, START)
    answer = stripe_client.v1.test_helpers.test_clocks.advance(
        month.clock, {"frozen_time": START + HOUR}
    )
    advancing = answer.status_details.advancing
    assert advancing is not None
    assert (answer.status, advancing.target_frozen_time) == ("advancing", START + HOUR)
    assert stripe_client.v1.test_helpers.test_clocks.retrieve(month.clock).status == "ready"
    with pytest.raises(stripe.InvalidRequestError, match="frozen_time"):
        stripe_client.v1.test_helpers.test_clocks.advance(month.clock, {"frozen_time": START})
    # Stripe moves a clock at most two intervals of its shortest subscription at a time.
    with pytest.raises(stripe.InvalidRequestError, match="two intervals"):
        stripe_client.v1.test_helpers.test_clocks.advance(
            month.clock, {"frozen_time": utc(2025, 8, 10, 10, 30, 1)}
        )
    # Meter events are checked against the customer's time, not the emulator's (2025-06-15).
    month.send(month.calendar, 1, START + HOUR)
    with pytest.raises(stripe.InvalidRequestError, match="5 minutes in the future"):
        month.send(month.calendar, 1, START + 2 * HOUR)
    with pytest.raises(stripe.InvalidRequestError, match="35 days"):
        month.send(month.calendar, 1, START - 36 * 86400)
    deleted = stripe_client.v1.test_helpers.test_clocks.delete(month.clock)
    assert deleted.deleted is True
    # Stripe deletes what was attached to the clock.
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.customers.retrieve(month.calendar)
    assert stripe_client.v1.subscriptions.list({"status": "all"}).data == []
