"""`POST /v1/invoices/create_preview` through the official SDK over HTTP, on a test clock.

A preview's metered lines are checked against totals the test computes from the events it sent
(current period, arrived so far), with each meter's formula, and against the draft the period's
end then really makes; bad requests are refused and change nothing.
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

START = utc(2025, 6, 9, 9, 30)
PERIOD_END = utc(2025, 7, 1)


class Account:
    """One customer on a test clock with a calendar-billed subscription pricing a `sum`, a
    `last` and a `count` meter (2, 0.5 and 7 minor units per unit)."""

    def __init__(self, client: stripe.StripeClient, make_meter: Callable[..., Any]) -> None:
        self.client = client
        self.clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START}).id
        self.customer = client.v1.customers.create(
            {"name": "Preview Co", "test_clock": self.clock}
        ).id
        self.logs: dict[str, UsageLog] = {}
        self.prices: dict[str, Any] = {}
        for name, formula, amount in (
            ("readings", "sum", {"unit_amount": 2}),
            ("sensors", "last", {"unit_amount_decimal": "0.5"}),
            ("alerts", "count", {"unit_amount": 7}),
        ):
            meter = make_meter(name, formula)
            self.prices[name] = metered_price(client, meter.id, name.title(), **amount)
            self.logs[name] = UsageLog(name)
        items: Any = [{"price": price.id} for price in self.prices.values()]
        self.subscription = client.v1.subscriptions.create(
            {
                "customer": self.customer,
                "items": items,
                "billing_cycle_anchor_config": CALENDAR_ANCHOR,
            }
        ).id
        self.now = START

    def to(self, frozen_time: int) -> None:
        advance_test_clock(self.client, self.clock, frozen_time)
        self.now = frozen_time

    def send(self, meter: str, value: int, timestamp: int) -> None:
        self.logs[meter].send(self.client, self.customer, value, timestamp, received_at=self.now)

    def expected(self, until: int) -> dict[str, tuple[int, int]]:
        """Per meter, (quantity, amount in cents) of the events received by `until` in the
        current period, computed from what the test sent."""
        start = START
        readings = self.logs["readings"].total(self.customer, start, PERIOD_END, until + 1)
        sensors = self.logs["sensors"].last(self.customer, start, PERIOD_END, until + 1)
        alerts = len(self.logs["alerts"].billable(self.customer, start, PERIOD_END, until + 1))
        return {
            "readings": (readings, readings * 2),
            "sensors": (sensors, (sensors + 1) // 2),  # 0.5 per unit, half up
            "alerts": (alerts, alerts * 7),
        }

    def lines(self, invoice: Any) -> dict[str, tuple[int, int]]:
        by_price = {price.id: name for name, price in self.prices.items()}
        return {
            by_price[line.pricing.price_details.price]: (line.quantity, line.amount)
            for line in invoice.lines.data
        }


@pytest.fixture
def account(stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]) -> Account:
    return Account(stripe_client, make_meter)


def test_a_preview_bills_the_current_period_so_far_with_each_meters_formula(
    account: Account, stripe_client: stripe.StripeClient
) -> None:
    account.to(utc(2025, 6, 11, 1))
    account.send("readings", 5, utc(2025, 6, 10, 10))
    account.send("readings", 8, utc(2025, 6, 11))
    # Distinct instants: an identifier is unique across meters (UsageLog counts per meter).
    account.send("sensors", 3, utc(2025, 6, 10, 10, 1))
    account.send("sensors", 5, utc(2025, 6, 10, 11, 1))
    account.send("alerts", 40, utc(2025, 6, 10, 10, 2))
    account.to(utc(2025, 6, 12))
    account.send("sensors", 2, utc(2025, 6, 11, 23))  # the latest timestamp: `last` is 2
    account.send("alerts", 1, utc(2025, 6, 11, 12))

    preview = stripe_client.v1.invoices.create_preview(
        {"subscription": account.subscription, "customer": account.customer}
    )

    assert preview.id.startswith("upcoming_in")
    assert (preview.status, preview.billing_reason, preview.number) == ("draft", "upcoming", None)
    assert preview.automatically_finalizes_at is None
    assert (preview.period_start, preview.period_end) == (START, PERIOD_END)
    assert preview.created == utc(2025, 6, 12)  # the customer's now (its test clock)
    expected = account.expected(account.now)
    assert expected == {"readings": (13, 26), "sensors": (2, 1), "alerts": (2, 14)}
    assert account.lines(preview) == expected
    assert preview.total == preview.amount_due == sum(a for _, a in expected.values())
    for line in preview.lines.data:
        assert (line.period.start, line.period.end) == (START, PERIOD_END)
    # Not an invoice Stripe keeps: not listed, not retrievable, no event.
    assert stripe_client.v1.invoices.list({"customer": account.customer}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.retrieve(preview.id)
    assert stripe_client.v1.events.list({"type": "invoice.*"}).data == []


def test_the_preview_equals_the_draft_the_period_end_makes(
    account: Account, stripe_client: stripe.StripeClient
) -> None:
    account.to(utc(2025, 6, 30, 20))
    account.send("readings", 11, utc(2025, 6, 30, 19))
    account.send("sensors", 4, utc(2025, 6, 30, 19, 1))
    account.send("alerts", 0, utc(2025, 6, 30, 19, 2))
    preview = stripe_client.v1.invoices.create_preview(
        {"subscription": account.subscription, "preview_mode": "recurring"}
    )
    account.to(utc(2025, 7, 1, 0, 30))  # the period ended; the draft waits for its grace period
    (draft,) = stripe_client.v1.invoices.list({"customer": account.customer}).data
    assert draft.status == "draft"
    assert account.lines(preview) == account.lines(draft) == account.expected(account.now)
    assert preview.total == draft.total
    # The next preview is the new period's, empty so far.
    after = stripe_client.v1.invoices.create_preview({"subscription": account.subscription})
    assert (after.period_start, after.period_end) == (PERIOD_END, utc(2025, 8, 1))
    assert after.total == 0


@pytest.mark.parametrize(
    ("params", "param", "message"),
    [
        ({}, "subscription", "Missing required param: subscription"),
        ({"customer": "CUSTOMER"}, "subscription", "2025-03-31.basil"),
        ({"subscription": "sub_missing"}, "id", "No such subscription"),
        ({"subscription": "SUB", "customer": "cus_other"}, "customer", "does not belong"),
        ({"subscription": "SUB", "preview_mode": "soon"}, "preview_mode", "must be one of"),
        ({"subscription": "SUB", "coupon": "X"}, "coupon", "unknown parameter"),
        ({"subscription": "SUB", "invoice_items": [{"price": "p"}]}, "invoice_items", "emulate"),
        (
            {"subscription": "SUB", "subscription_details": {"cancel_now": True}},
            "subscription_details[cancel_now]",
            "emulate",
        ),
        (
            {"subscription": "SUB", "subscription_details": {"trial_end": "later"}},
            "subscription_details[trial_end]",
            "Invalid",
        ),
    ],
)
def test_bad_preview_requests_are_refused_as_stripe_refuses_them(
    account: Account,
    stripe_client: stripe.StripeClient,
    params: dict[str, Any],
    param: str,
    message: str,
) -> None:
    account.send("readings", 5, START)
    filled = {
        key: {"SUB": account.subscription, "CUSTOMER": account.customer}.get(value, value)
        if isinstance(value, str)
        else value
        for key, value in params.items()
    }
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.invoices.create_preview(filled)  # type: ignore[arg-type]
    assert refused.value.param == param
    assert message in str(refused.value.user_message)
    # Nothing was made or lost: the usage still previews in full, no invoice exists.
    preview = stripe_client.v1.invoices.create_preview({"subscription": account.subscription})
    assert account.lines(preview)["readings"] == (5, 10)
    assert stripe_client.v1.invoices.list({"customer": account.customer}).data == []


def test_a_canceled_subscription_has_no_upcoming_invoice(
    account: Account, stripe_client: stripe.StripeClient
) -> None:
    stripe_client.v1.subscriptions.cancel(account.subscription)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.invoices.create_preview({"subscription": account.subscription})
    assert refused.value.code == "invoice_upcoming_none"


def test_a_scheduled_cancellation_ends_the_previewed_period(
    account: Account, stripe_client: stripe.StripeClient
) -> None:
    cancel_at = utc(2025, 6, 20)
    stripe_client.v1.subscriptions.update(account.subscription, {"cancel_at": cancel_at})
    account.send("readings", 5, START)
    preview = stripe_client.v1.invoices.create_preview({"subscription": account.subscription})
    assert (preview.period_start, preview.period_end) == (START, cancel_at)
    assert account.lines(preview)["readings"] == (5, 10)
