"""A simulated month on a Stripe test clock: what lands on each finalized invoice.

Three customers on one test clock, each with one organization, billed by the project's meters
as `sync-meters` creates them (hourly pre-aggregated): A calendar-anchored at 00:00 UTC, B
anchored mid-day (14:37), C calendar-anchored and canceled mid-period (09:20). Subscriptions
reach Postgres only through the emulator's signed webhooks and the processing job; usage goes
out through the project's own runs (daily at 02:00 and at every period end); Stripe's default
1 h finalization grace period applies. Every finalized invoice line is compared with a total
the test computes from the source rows for that customer's period.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
import stripe
from sqlalchemy import Engine, text

from billing_pipeline.stripe_reporting.attribution import AFTER_END
from billing_pipeline.stripe_reporting.checks import unbilled_usage, usage_after_invoice_finalized
from billing_pipeline.usage.meters import ACTIVE_SENSORS, TEMPERATURE_READINGS
from billing_pipeline_tests.support.billing_month import (
    BillingMonth,
    readings_in,
    receiving_webhooks,
    sensors_active_at,
    subscription_period,
)
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings_at,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.invoicing import metered_price
from billing_pipeline_tests.support.meter_kinds import recreate_meters
from billing_pipeline_tests.support.reporting import (
    add_billing_period,
    days_before,
    run_days,
    stripe_value,
    subscribe,
)
from billing_pipeline_tests.support.stripe import make_client, new_customer
from stripe_emulator import StripeEmulator

READING_TIMES = [timedelta(hours=h, minutes=10) for h in (1, 9, 13, 15, 20)]
D1, D2 = days_before(3), days_before(2)
MONTH = timedelta(days=30)


def _midnight(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _finalized_lines(client: stripe.StripeClient, customer: str) -> dict[tuple[int, int], Any]:
    """Each finalized invoice's lines by its period (the emulator pays at finalization)."""
    invoices = client.v1.invoices.list({"customer": customer, "limit": 100}).auto_paging_iter()
    return {
        (invoice.period_start, invoice.period_end): invoice.lines.data
        for invoice in invoices
        if invoice.status in ("open", "paid")
    }


def test_every_finalized_invoice_bills_its_periods_source_usage_closing_day_included(
    billing: Billing, emulator_server: StripeEmulator
) -> None:
    recreate_meters(billing.emulator, billing.stripe_billing, "pre_aggregated")
    meters = {m.event_name: m.id for m in billing.stripe_billing.list_meters()}
    client = make_client(billing.api_base)
    readings_price = metered_price(client, meters[TEMPERATURE_READINGS.event_name], "Readings")
    sensors_price = metered_price(client, meters[ACTIVE_SENSORS.event_name], "Active sensors")
    meter_of_price = {readings_price.id: "readings", sensors_price.id: "sensors"}

    # The month ends a day or more before today, so every day stays inside Stripe's window.
    start = _midnight(datetime.now(UTC)) - timedelta(days=33) + timedelta(hours=9, minutes=30)
    calendar_anchor: Any = {
        "day_of_month": (start + timedelta(days=1)).day,
        "hour": 0,
        "minute": 0,
        "second": 0,
    }
    midday_anchor = _midnight(start) + timedelta(days=10, hours=14, minutes=37)
    cancel_at = _midnight(start) + timedelta(days=18, hours=9, minutes=20)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(start.timestamp())})
    month = BillingMonth(billing, client, clock.id, start)

    for organization in (1, 2, 3):
        add_organization(billing.engine, organization)
    long_ago = start - timedelta(days=5)
    sensors = {
        11: (1, long_ago, _midnight(start) + timedelta(days=19, hours=10)),  # removed mid-period
        12: (1, long_ago, None),
        13: (1, long_ago, None),
        21: (2, long_ago, None),
        22: (2, _midnight(start) + timedelta(days=4, hours=12), None),
        31: (3, long_ago, None),
        32: (3, long_ago, _midnight(start) + timedelta(days=18, hours=12)),  # after the cancel
    }
    for sensor, (organization, created, removed) in sensors.items():
        add_sensor(billing.engine, sensor, organization, created, removed)
        for day in range(34):
            for offset in READING_TIMES:
                at = _midnight(start) + timedelta(days=day) + offset
                if at > created and (removed is None or at < removed):
                    month.reading(sensor, at)
    # Late readings inside A's period: recorded on day 8, written on day 12 (a gateway offline).
    for minute in range(5):
        recorded = _midnight(start) + timedelta(days=8, hours=11, minutes=minute)
        month.reading(12, recorded, ingested_at=_midnight(start) + timedelta(days=12, hours=5))

    customers = {
        name: client.v1.customers.create({"name": name, "test_clock": clock.id}).id
        for name in ("A", "B", "C")
    }
    items: Any = [{"price": readings_price.id}, {"price": sensors_price.id}]
    with receiving_webhooks(billing, emulator_server.webhook_secret):
        subscriptions = {
            "A": client.v1.subscriptions.create(
                {
                    "customer": customers["A"],
                    "items": items,
                    "billing_cycle_anchor_config": calendar_anchor,
                    "metadata": {"organization_id": "1"},
                }
            ),
            "B": client.v1.subscriptions.create(
                {
                    "customer": customers["B"],
                    "items": items,
                    "billing_cycle_anchor": int(midday_anchor.timestamp()),
                    "metadata": {"organization_id": "2"},
                }
            ),
            "C": client.v1.subscriptions.create(
                {
                    "customer": customers["C"],
                    "items": items,
                    "billing_cycle_anchor_config": calendar_anchor,
                    "metadata": {"organization_id": "3"},
                }
            ),
        }
        client.v1.subscriptions.update(
            subscriptions["C"].id, {"cancel_at": int(cancel_at.timestamp())}
        )
        first_end = subscription_period(subscriptions["A"])[1]
        month.advance(first_end + timedelta(minutes=1))
        month_end = subscription_period(client.v1.subscriptions.retrieve(subscriptions["A"].id))[1]
        assert month_end < datetime.now(UTC) - timedelta(hours=6), "the month must be over"
        boundaries = [first_end, midday_anchor, cancel_at, month_end]
        month.live_through(month_end + timedelta(hours=3), boundaries)

    assert not month.failed_runs
    organization_of = {"A": 1, "B": 2, "C": 3}
    expected_periods = {
        "A": {(start, first_end), (first_end, month_end)},
        "B": {(start, midday_anchor)},
        "C": {(start, first_end), (first_end, cancel_at)},
    }
    for name, customer in customers.items():
        lines = _finalized_lines(client, customer)
        periods = {
            (datetime.fromtimestamp(s, tz=UTC), datetime.fromtimestamp(e, tz=UTC)) for s, e in lines
        }
        assert periods == expected_periods[name], name
        for (period_start, period_end), period_lines in lines.items():
            begin = datetime.fromtimestamp(period_start, tz=UTC)
            end = datetime.fromtimestamp(period_end, tz=UTC)
            organization = organization_of[name]
            expected = {
                "readings": readings_in(billing.engine, organization, begin, end),
                "sensors": sensors_active_at(billing.engine, organization, end),
            }
            billed = {
                meter_of_price[line.pricing.price_details.price]: line.quantity
                for line in period_lines
            }
            assert billed == expected, (name, begin, end)
    # The closing day of A's month was billed (its readings are part of the total above).
    assert readings_in(billing.engine, 1, month_end - timedelta(days=1), month_end) > 0
    # Stripe's last value for the period is the sensors at its end, not the day before's.
    assert sensors_active_at(billing.engine, 1, month_end) == 2

    # C's usage after its cancellation is on no invoice and is shown as unbilled.
    after_cancel = readings_in(billing.engine, 3, cancel_at, month_end)
    assert after_cancel > 0
    checks = dg.materialize(
        [unbilled_usage, usage_after_invoice_finalized],
        instance=billing.instance,
        resources=billing.resources(),
        selection=dg.AssetSelection.checks(unbilled_usage, usage_after_invoice_finalized),
        raise_on_error=False,
    )
    evaluations = {e.check_name: e for e in checks.get_asset_check_evaluations()}
    assert evaluations["usage_after_invoice_finalized"].passed
    unbilled = str(evaluations["unbilled_usage"].metadata["details"].value)
    assert AFTER_END in unbilled and "| 3 |" in unbilled

    # A reading that arrives after A's month was finalized is on no invoice: the check lists it.
    late = month_end - timedelta(hours=3)
    month.reading(12, late, ingested_at=month.now)
    month.advance(month.now + timedelta(minutes=1))
    month.run(late.date())
    checks = dg.materialize(
        [usage_after_invoice_finalized],
        instance=billing.instance,
        resources=billing.resources(),
        selection=dg.AssetSelection.checks(usage_after_invoice_finalized),
        raise_on_error=False,
    )
    (evaluation,) = checks.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["units_missing"].value == 1
    details = str(evaluation.metadata["details"].value)
    assert customers["A"] in details and "temperature_readings" in details


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
