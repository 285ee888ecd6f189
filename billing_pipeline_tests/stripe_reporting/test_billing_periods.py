"""Days cut by billing boundaries: what Stripe bills on each side of a period end.

Each test compares what Stripe holds for the customer on each side of the boundary with a total
it computes from the source rows (readings inside the part, sensors active at its end). The
month through the real daemon, with every finalized invoice line, is
`test_billing_month_on_the_daemon.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from billing_pipeline_tests.support.billing_month import (
    readings_in,
    sensors_active_at,
)
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings_at,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.meter_kinds import recreate_meters
from billing_pipeline_tests.support.reporting import (
    add_billing_period,
    days_before,
    run_days,
    stripe_value,
    subscribe,
)
from billing_pipeline_tests.support.stripe import new_customer

D1, D2 = days_before(3), days_before(2)
MONTH = timedelta(days=30)


def _source(engine: Engine, organizations: list[int], start: datetime, end: datetime) -> Any:
    """What an invoice for [start, end) must bill, from the source rows: readings inside it,
    sensors active at its end."""
    return {
        "temperature_readings": sum(readings_in(engine, o, start, end) for o in organizations),
        "active_sensors": sum(sensors_active_at(engine, o, end) for o in organizations),
    }


def _stripe(billing: Billing, customer: str, start: datetime, end: datetime) -> Any:
    """What Stripe bills the customer for [start, end), per meter."""
    return {
        meter: stripe_value(billing.stripe_billing, meter, customer, start, end)
        for meter in ("temperature_readings", "active_sensors")
    }


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_period_ending_in_the_days_last_hour_bills_both_sides_of_that_hour(
    billing: Billing, api: str
) -> None:
    # Issue 20, item 6: the part after 23:20 has no hour window starting inside it; it takes the
    # 23:00 window and the part before it the 22:00 one, each stamped inside its own period.
    recreate_meters(billing.emulator, billing.stripe_billing, "pre_aggregated")
    alpha = new_customer(billing.stripe_billing, "Alpha")
    add_organization(billing.engine, 1, customer=alpha)
    boundary = midnight(D1) + timedelta(hours=23, minutes=20)
    add_billing_period(billing.engine, f"sub_{alpha}", alpha, boundary - MONTH, boundary)
    add_billing_period(billing.engine, f"sub_{alpha}", alpha, boundary, boundary + MONTH)
    add_sensor(billing.engine, 11, 1, midnight(D1) - timedelta(days=3))
    add_sensor(billing.engine, 12, 1, boundary + timedelta(minutes=15))
    add_readings_at(
        billing.engine,
        11,
        [midnight(D1) + timedelta(hours=h, minutes=m) for h, m in ((1, 10), (22, 50), (23, 10))],
    )
    add_readings_at(billing.engine, 12, [boundary + timedelta(minutes=m) for m in (20, 30)])

    assert run_days(
        billing.instance, billing.database_url, billing.api_base, D1, meter_event_api=api
    ).success

    for start, end in ((midnight(D1), boundary), (boundary, midnight(D2))):
        assert _stripe(billing, alpha, start, end) == _source(billing.engine, [1], start, end)
    assert _source(billing.engine, [1], boundary, midnight(D2))["temperature_readings"] == 2


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("newer", ["arrival", "timestamp"])
def test_a_boundary_learned_after_its_day_was_billed_rebills_each_side_of_it(
    billing: Billing, api: str, newer: str
) -> None:
    # Issue 20, item 4: the day went out whole (one event in the 23:00 window); then a late
    # webhook tells of a period end at 14:30. The part after it has no readings: the 23:00
    # window must drop to 0 instead of keeping the whole day's readings.
    recreate_meters(billing.emulator, billing.stripe_billing, "pre_aggregated")
    billing.emulator.set_newer_mode(newer)
    alpha = new_customer(billing.stripe_billing, "Alpha")
    add_organization(billing.engine, 1, customer=alpha)
    add_organization(billing.engine, 2)
    subscribe(billing.engine, 2, alpha)
    long_ago = midnight(D1) - timedelta(days=3)
    add_sensor(billing.engine, 11, 1, long_ago)
    add_sensor(billing.engine, 21, 2, long_ago)
    add_sensor(billing.engine, 22, 2, midnight(D1) + timedelta(hours=16))
    add_readings_at(billing.engine, 11, [midnight(D1) + timedelta(hours=h) for h in (1, 9, 13)])
    add_readings_at(billing.engine, 21, [midnight(D1) + timedelta(hours=2)])
    url = billing.api_base
    assert run_days(billing.instance, billing.database_url, url, D1, meter_event_api=api).success

    boundary = midnight(D1) + timedelta(hours=14, minutes=30)
    add_billing_period(billing.engine, f"sub_{alpha}", alpha, boundary - MONTH, boundary)
    add_billing_period(billing.engine, f"sub_{alpha}", alpha, boundary, boundary + MONTH)
    # A run of another day converges the whole window, the re-cut day included.
    assert run_days(billing.instance, billing.database_url, url, D2, meter_event_api=api).success

    for start, end in ((midnight(D1), boundary), (boundary, midnight(D2))):
        assert _stripe(billing, alpha, start, end) == _source(billing.engine, [1, 2], start, end)


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_boundary_learned_late_on_a_raw_meter_moves_the_days_usage_to_each_side_of_it(
    billing: Billing, api: str
) -> None:
    # Issue 20, item 4 on a raw `sum` meter: the whole day's event lies after the boundary
    # learned later (whole days are stamped early in the day), so the correction is reckoned
    # per part by where each event's timestamp falls, not by the part it was planned for.
    recreate_meters(billing.emulator, billing.stripe_billing, "raw")
    alpha = new_customer(billing.stripe_billing, "Alpha")
    add_organization(billing.engine, 1, customer=alpha)
    add_sensor(billing.engine, 11, 1, midnight(D1) - timedelta(days=3))
    add_readings_at(billing.engine, 11, [midnight(D1) + timedelta(hours=h) for h in (0.1, 9, 13)])
    url = billing.api_base
    assert run_days(billing.instance, billing.database_url, url, D1, meter_event_api=api).success

    boundary = midnight(D1) + timedelta(minutes=40)
    add_billing_period(billing.engine, f"sub_{alpha}", alpha, boundary - MONTH, boundary)
    add_billing_period(billing.engine, f"sub_{alpha}", alpha, boundary, boundary + MONTH)
    assert run_days(billing.instance, billing.database_url, url, D2, meter_event_api=api).success

    for start, end in ((midnight(D1), boundary), (boundary, midnight(D2))):
        assert stripe_value(
            billing.stripe_billing, "temperature_readings", alpha, start, end
        ) == readings_in(billing.engine, 1, start, end)
    # A raw `last` meter bills whole days (README, "Billing periods").
    day = (midnight(D1), midnight(D2))
    assert stripe_value(billing.stripe_billing, "active_sensors", alpha, *day) == (
        sensors_active_at(billing.engine, 1, midnight(D2))
    )


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_boundary_that_a_late_webhook_removes_leaves_no_event_in_its_old_hour_window(
    billing: Billing, api: str
) -> None:
    # Issue 20, item 4 the other way: organization 2 joined Alpha at 10:00 on D1, which cut
    # organization 1's day there; a late webhook backdates that subscription to before D1. The
    # day is one part again: the 09:00 window that held the morning goes to 0.
    recreate_meters(billing.emulator, billing.stripe_billing, "pre_aggregated")
    alpha = new_customer(billing.stripe_billing, "Alpha")
    add_organization(billing.engine, 1, customer=alpha)
    add_organization(billing.engine, 2)
    joined = midnight(D1) + timedelta(hours=10)
    subscribe(billing.engine, 2, alpha, started=joined)
    for sensor, organization in ((11, 1), (21, 2)):
        add_sensor(billing.engine, sensor, organization, midnight(D1) - timedelta(days=3))
        add_readings_at(
            billing.engine, sensor, [midnight(D1) + timedelta(hours=h) for h in (3, 8, 15, 21)]
        )
    url = billing.api_base
    assert run_days(billing.instance, billing.database_url, url, D1, meter_event_api=api).success

    with billing.engine.begin() as connection:
        connection.execute(
            text("UPDATE subscriptions SET started_at = :started WHERE organization_id = 2"),
            {"started": midnight(D1) - timedelta(days=5)},
        )
    assert run_days(billing.instance, billing.database_url, url, D2, meter_event_api=api).success

    # No boundary is left in D1: its invoice bills the day as one, both organizations summed.
    day = (midnight(D1), midnight(D2))
    assert _stripe(billing, alpha, *day) == _source(billing.engine, [1, 2], *day)
