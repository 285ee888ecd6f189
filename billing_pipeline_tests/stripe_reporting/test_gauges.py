"""`last` gauges under both readings of "last", and back-dated sensor rows found without anyone.

Stripe's docs leave open whether `last` means the latest timestamp or the latest arrival; the
emulator does either. Through the real assets and the emulator over HTTP, for both meter kinds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.schedules import RECOMPUTED_DAYS, trailing_recompute_schedule
from billing_pipeline_tests.support.builders import add_organization, add_sensor, midnight
from billing_pipeline_tests.support.reporting import (
    ASSETS,
    ASSETS_WITHOUT_RETRIES,
    TODAY,
    days_before,
    move_subscriptions,
    period_value,
    reporting_resources,
    run_days,
    stripe_view,
)
from billing_pipeline_tests.support.stripe import new_customer
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

D1, D2, D3, D4 = (days_before(n) for n in (6, 5, 4, 3))


def gauges(billing: StripeBilling, customer: str) -> tuple[dict[date, float], float]:
    """Stripe's daily `active_sensors` values for the customer, and the period's value."""
    view = stripe_view(billing, [customer], D1, TODAY)
    daily = {day: value for (meter, _, day), value in view.items() if meter == "active_sensors"}
    return daily, period_value(billing, "active_sensors", customer, D1, TODAY)


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("last_mode", ["timestamp", "arrival"])
def test_the_period_ends_on_the_newest_days_value_whatever_order_days_are_billed_in(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
    meter_kind: str,
    last_mode: str,
    api: str,
) -> None:
    # Case 4: one sensor from before D1, one from D3, one from D4. The mode says what "last"
    # means for raw meters and what "newer" means inside a pre-aggregated meter's day.
    emulator_control.set_last_mode(last_mode)
    emulator_control.set_newer_mode(last_mode)
    alpha, beta = new_customer(stripe_billing, "Alpha"), new_customer(stripe_billing, "Beta")
    add_organization(engine, 1, customer=alpha)
    add_sensor(engine, 1, 1, midnight(D1) - timedelta(days=2))
    add_sensor(engine, 2, 1, midnight(D3) + timedelta(hours=8))
    add_sensor(engine, 3, 1, midnight(D4) + timedelta(hours=6))
    expected = {D1: 1, D2: 1, D3: 2, D4: 3}

    # A backfill of earlier days after a later day was billed.
    assert run_days(
        dagster_instance, database_url, emulator_server.url, D4, meter_event_api=api
    ).success
    assert run_days(
        dagster_instance, database_url, emulator_server.url, D1, D3, meter_event_api=api
    ).success
    assert gauges(stripe_billing, alpha) == (expected, 3)

    # A correction of old days after a customer move.
    move_subscriptions(engine, 1, beta)
    assert run_days(
        dagster_instance, database_url, emulator_server.url, D2, meter_event_api=api
    ).success
    assert gauges(stripe_billing, alpha) == ({}, 0)
    assert gauges(stripe_billing, beta) == (expected, 3)

    # A back-dated sensor corrects D2; the runs fail half-way (corrections and re-asserts fail
    # at random, no step retry) before one finally succeeds.
    add_sensor(engine, 4, 1, midnight(D2) + timedelta(hours=1), midnight(D3) + timedelta(hours=2))
    expected[D2] = 2
    for seed in (3, 11):
        emulator_control.set_faults(error_500_rate=0.5, seed=seed)
        run_days(
            dagster_instance,
            database_url,
            emulator_server.url,
            D2,
            assets=ASSETS_WITHOUT_RETRIES,
            retry_attempts=1,
            meter_event_api=api,
        )
    emulator_control.set_faults()
    assert run_days(
        dagster_instance, database_url, emulator_server.url, D2, meter_event_api=api
    ).success
    assert gauges(stripe_billing, beta) == (expected, 3)


def test_back_dated_sensor_rows_are_corrected_by_the_trailing_recompute(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    meter_kind: str,
) -> None:
    # Case 9: sensors created or deactivated with a time in the past change billed days, and no
    # late reading points at them.
    alpha = new_customer(stripe_billing, "Alpha")
    add_organization(engine, 1, customer=alpha)
    add_sensor(engine, 1, 1, midnight(D1) - timedelta(days=2))
    add_sensor(engine, 2, 1, midnight(D1) - timedelta(days=2))
    assert run_days(dagster_instance, database_url, emulator_server.url, D1, D4).success
    assert gauges(stripe_billing, alpha) == ({D1: 2, D2: 2, D3: 2, D4: 2}, 2)

    add_sensor(engine, 3, 1, midnight(D2) + timedelta(hours=3))  # created back-dated
    with engine.begin() as connection:  # deactivated back-dated
        connection.execute(
            text("UPDATE sensors SET deactivated_at = :at WHERE id = 1"),
            {"at": midnight(D4) + timedelta(hours=1)},
        )
    context = dg.build_schedule_context(
        instance=dagster_instance, scheduled_execution_time=datetime.now(UTC)
    )
    request = trailing_recompute_schedule(context)
    assert isinstance(request, dg.RunRequest)
    first = date.fromisoformat(request.tags["dagster/asset_partition_range_start"])
    assert first == TODAY - timedelta(days=RECOMPUTED_DAYS)

    result = dg.materialize(
        ASSETS,
        instance=dagster_instance,
        resources=reporting_resources(database_url, emulator_server.url),
        tags=request.tags,
    )

    assert result.success
    # The recompute covers every day up to yesterday, so the days after D4 are billed too.
    later = {days_before(n): 2 for n in (2, 1)}
    assert gauges(stripe_billing, alpha) == ({D1: 2, D2: 3, D3: 3, D4: 2, **later}, 2)
