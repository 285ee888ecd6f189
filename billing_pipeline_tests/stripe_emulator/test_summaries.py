"""Summaries against hand-computed sum / last / count totals for several customers and days."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe

from billing_pipeline_tests.support.stripe import DAY, MIDNIGHT
from stripe_emulator import EmulatorControl

# Every test here starts from an empty emulator whose clock reads NOON.
pytestmark = pytest.mark.usefixtures("emulator_at_noon")

HOUR = 3600
D0 = MIDNIGHT - 3 * DAY
D1 = D0 + DAY
D2 = D1 + DAY


def emit(stripe_client: stripe.StripeClient, name: str, customer: str, value: int, ts: int) -> None:
    stripe_client.v1.billing.meter_events.create(
        {
            "event_name": name,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "timestamp": ts,
        }
    )


def daily(
    stripe_client: stripe.StripeClient, meter_id: str, customer: str, start: int, end: int
) -> list[tuple[int, float]]:
    page = stripe_client.v1.billing.meters.event_summaries.list(
        meter_id,
        {
            "customer": customer,
            "start_time": start,
            "end_time": end,
            "value_grouping_window": "day",
            "limit": 100,
        },
    )
    return [(s.start_time, s.aggregated_value) for s in page.data]


@pytest.fixture
def customers(stripe_client: stripe.StripeClient) -> tuple[str, str]:
    a = stripe_client.v1.customers.create({"email": "a@example.com"}).id
    b = stripe_client.v1.customers.create({"email": "b@example.com"}).id
    return a, b


def test_sum_per_day_for_two_customers(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any], customers: tuple[str, str]
) -> None:
    a, b = customers
    meter = make_meter("readings", "sum")
    emit(stripe_client, "readings", a, 5, D0 + HOUR)
    emit(stripe_client, "readings", a, 7, D1 - 1)  # last second of D0
    emit(stripe_client, "readings", a, 11, D1)  # exactly midnight: belongs to D1
    emit(stripe_client, "readings", a, -3, D2 + 12 * HOUR)
    emit(stripe_client, "readings", b, 100, D0 + 2 * HOUR)
    emit(stripe_client, "readings", b, 1, D2 + HOUR)
    assert daily(stripe_client, meter.id, a, D0, D2 + DAY) == [(D0, 12.0), (D1, 11.0), (D2, -3.0)]
    assert daily(stripe_client, meter.id, b, D0, D2 + DAY) == [(D0, 100.0), (D1, 0.0), (D2, 1.0)]
    whole = stripe_client.v1.billing.meters.event_summaries.list(
        meter.id, {"customer": a, "start_time": D0, "end_time": D2 + DAY}
    )
    (summary,) = whole.data
    assert summary.object == "billing.meter_event_summary"
    assert isinstance(summary.aggregated_value, float)
    assert summary.aggregated_value == 20.0
    assert (summary.start_time, summary.end_time, summary.meter) == (D0, D2 + DAY, meter.id)


def test_count_ignores_values(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any], customers: tuple[str, str]
) -> None:
    a, b = customers
    meter = make_meter("api_calls", "count")
    for ts, value in ((D0 + 1, 50), (D0 + 2, 1), (D0 + 3, 9), (D1 + 5, 2)):
        emit(stripe_client, "api_calls", a, value, ts)
    emit(stripe_client, "api_calls", b, 8, D1 + 7)
    assert daily(stripe_client, meter.id, a, D0, D2) == [(D0, 3.0), (D1, 1.0)]
    assert daily(stripe_client, meter.id, b, D0, D2) == [(D0, 0.0), (D1, 1.0)]


def test_last_by_timestamp_or_by_arrival(
    stripe_client: stripe.StripeClient,
    make_meter: Callable[..., Any],
    customers: tuple[str, str],
    emulator_at_noon: EmulatorControl,
) -> None:
    a, b = customers
    meter = make_meter("active_sensors", "last")
    emit(stripe_client, "active_sensors", a, 4, D0 + 10 * HOUR)  # latest timestamp, sent first
    emit(stripe_client, "active_sensors", a, 9, D0 + 8 * HOUR)  # earlier timestamp, sent last
    emit(stripe_client, "active_sensors", a, 6, D1 + HOUR)
    emit(stripe_client, "active_sensors", b, 2, D0 + HOUR)
    assert daily(stripe_client, meter.id, a, D0, D2) == [(D0, 4.0), (D1, 6.0)]
    assert daily(stripe_client, meter.id, b, D0, D2) == [(D0, 2.0), (D1, 0.0)]
    emulator_at_noon.set_last_mode("arrival")
    assert daily(stripe_client, meter.id, a, D0, D2) == [(D0, 9.0), (D1, 6.0)]


def test_hour_windows_and_pagination(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any], customers: tuple[str, str]
) -> None:
    a, _ = customers
    meter = make_meter("readings", "sum")
    for hour in range(24):
        emit(stripe_client, "readings", a, hour, D0 + hour * HOUR + 30)
    first = stripe_client.v1.billing.meters.event_summaries.list(
        meter.id,
        {"customer": a, "start_time": D0, "end_time": D1, "value_grouping_window": "hour"},
    )
    assert len(first.data) == 10
    assert first.has_more
    every = list(
        stripe_client.v1.billing.meters.event_summaries.list(
            meter.id,
            {"customer": a, "start_time": D0, "end_time": D1, "value_grouping_window": "hour"},
        ).auto_paging_iter()
    )
    assert [s.aggregated_value for s in every] == [float(h) for h in range(24)]
    assert [s.start_time for s in every] == [D0 + h * HOUR for h in range(24)]


@pytest.mark.parametrize(
    ("start", "end", "window"),
    [(D0 + 30, D1, None), (D0 + HOUR, D1, "day"), (D1, D0, None), (D0, D1, "week")],
)
def test_misaligned_or_invalid_ranges_are_rejected(
    stripe_client: stripe.StripeClient,
    make_meter: Callable[..., Any],
    customers: tuple[str, str],
    start: int,
    end: int,
    window: str | None,
) -> None:
    meter = make_meter("readings", "sum")
    params: Any = {"customer": customers[0], "start_time": start, "end_time": end}
    if window:
        params["value_grouping_window"] = window
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.billing.meters.event_summaries.list(meter.id, params)
