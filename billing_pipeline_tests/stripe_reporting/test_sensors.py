"""Late data end to end: the sensor notices it, the rerun sends only the difference to Stripe.

Real Dagster instance on Postgres, real application tables, the Stripe emulator over HTTP, and
both readings of Stripe's `last` (latest timestamp, latest arrival).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import Engine, text
from stripe.params.billing import MeterEventSummaryListParams

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.period_close import PERIOD_CLOSE_TAG
from billing_pipeline.stripe_reporting.sensors import (
    LATE_READINGS_TAG,
    late_readings_sensor,
    period_close_sensor,
)
from billing_pipeline.usage.meters import ACTIVE_SENSORS, TEMPERATURE_READINGS, Meter
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import Billing, evaluate_sensor, materialize_day
from billing_pipeline_tests.support.stripe import new_customer

NOW = datetime.now(UTC)
D0, D1, D2 = (NOW.date() - timedelta(days=n) for n in (3, 2, 1))
LAST_MODES = pytest.mark.parametrize("last_mode", ["timestamp", "arrival"])


def summaries(
    stripe_billing: StripeBilling, meter: Meter, customer: str, first: date, end: date
) -> tuple[list[float], float]:
    """Stripe's day-window values for [first, end) and its value for the whole range."""
    remote = next(m for m in stripe_billing.list_meters() if m.event_name == meter.event_name)
    api = stripe_billing.client.v1.billing.meters.event_summaries
    window: MeterEventSummaryListParams = {
        "customer": customer,
        "start_time": int(midnight(first).timestamp()),
        "end_time": int(midnight(end).timestamp()),
    }
    days = api.list(remote.id, {**window, "value_grouping_window": "day", "limit": 100})
    [whole] = api.list(remote.id, window).data  # no grouping window: the whole range's value
    return [float(s.aggregated_value) for s in days.data], float(whole.aggregated_value)


def computed_an_hour_ago(engine: Engine) -> None:
    """Age the stored usage as if the daily run had happened an hour ago."""
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE billing.daily_usage SET computed_at = computed_at - interval '1 hour'")
        )


def evaluate(billing: Billing, cursor: str | None) -> dg.SensorResult:
    return evaluate_sensor(late_readings_sensor, billing.instance, billing.database_url, cursor)


@LAST_MODES
def test_late_readings_are_noticed_and_only_the_difference_reaches_stripe(
    last_mode: str,
    billing: Billing,
) -> None:
    billing.emulator.set_last_mode(last_mode)
    alpha = new_customer(billing.stripe_billing, "Alpha")
    add_organization(billing.engine, 1, customer=alpha)
    add_sensor(billing.engine, 11, 1, midnight(D0) - timedelta(days=10))
    add_readings(billing.engine, 11, D0, 10)
    add_readings(billing.engine, 11, D1, 12)
    for day in (D0, D1):
        assert billing.materialize_day(day).success
    computed_an_hour_ago(billing.engine)
    sent_on_time = billing.emulator.meter_events()

    # A gateway delivers 4 readings from D0 half an hour ago; today's readings are not late
    # (today is not billed yet) but move the cursor.
    late_at = NOW - timedelta(minutes=30)
    add_readings(billing.engine, 11, D0, 4, ingested_at=late_at)
    add_readings(billing.engine, 11, NOW.date(), 3, ingested_at=NOW)

    result = evaluate(billing, cursor=None)
    [request] = result.run_requests or []
    assert request.partition_key == D0.isoformat()
    assert request.run_key == f"late-readings-{D0.isoformat()}-{late_at.isoformat()}"
    assert request.tags[LATE_READINGS_TAG] == late_at.isoformat()
    assert result.cursor == NOW.isoformat()
    # The same tick evaluated again (the daemon restarted before saving the cursor) finds the
    # same run key, which the daemon skips: the correction is not queued twice.
    again = evaluate(billing, cursor=None)
    assert [r.run_key for r in again.run_requests or []] == [request.run_key]

    day = date.fromisoformat(request.partition_key or "")
    assert billing.materialize_day(day).success

    # The meters are pre-aggregated (as sync-meters creates them): the correction is one event
    # carrying D0's whole new value, which replaces the day's earlier one.
    [correction] = billing.emulator.meter_events()[len(sent_on_time) :]
    assert correction["identifier"].startswith(f"bp-temperature_readings-{alpha}-{D0:%Y%m%d}-r2-")
    assert correction["value"] == 14
    readings_by_day, _ = summaries(billing.stripe_billing, TEMPERATURE_READINGS, alpha, D0, D2)
    assert readings_by_day == [14.0, 12.0]
    sensors_by_day, sensors_last = summaries(billing.stripe_billing, ACTIVE_SENSORS, alpha, D0, D2)
    assert (sensors_by_day, sensors_last) == ([1.0, 1.0], 1.0)

    idle = evaluate(billing, cursor=result.cursor)
    assert idle.run_requests == [] and idle.skip_reason is not None
    assert idle.cursor == result.cursor


@LAST_MODES
def test_a_gauge_correction_of_an_old_day_never_changes_what_later_days_bill(
    last_mode: str,
    billing: Billing,
) -> None:
    billing.emulator.set_last_mode(last_mode)
    alpha = new_customer(billing.stripe_billing, "Alpha")
    add_organization(billing.engine, 1, customer=alpha)
    add_sensor(billing.engine, 11, 1, midnight(D0) - timedelta(days=10))
    add_sensor(
        billing.engine, 12, 1, midnight(D0) - timedelta(days=10), midnight(D1) + timedelta(hours=5)
    )
    add_sensor(billing.engine, 13, 1, midnight(D1) + timedelta(hours=1))  # replaces 12
    for day in (D0, D1, D2):
        assert billing.materialize_day(day).success
    end = D2 + timedelta(days=1)
    assert summaries(billing.stripe_billing, ACTIVE_SENSORS, alpha, D0, end) == (
        [2.0, 2.0, 2.0],
        2.0,
    )

    # Sensor 12 was in fact switched off on D0: only D0's gauge changes (2 -> 1).
    with billing.engine.begin() as connection:
        connection.execute(
            text("UPDATE sensors SET deactivated_at = :at WHERE id = 12"),
            {"at": midnight(D0) + timedelta(hours=5)},
        )
    assert billing.materialize_day(D0).success

    # D0 now bills 1, D1 and D2 still 2, and the period's `last` is still the newest day's 2:
    # on a pre-aggregated meter the correction only replaces D0's value, nothing is re-asserted
    # (raw meters under both orderings: test_gauges.py).
    assert summaries(billing.stripe_billing, ACTIVE_SENSORS, alpha, D0, end) == (
        [1.0, 2.0, 2.0],
        2.0,
    )
    identifiers = [
        e["identifier"]
        for e in billing.emulator.meter_events()
        if e["event_name"] == "active_sensors"
    ]
    assert len(identifiers) == 4
    assert identifiers[-1].startswith(f"bp-active_sensors-{alpha}-{D0:%Y%m%d}-r2-")


def test_a_day_computed_while_in_progress_is_left_to_the_daily_run(billing: Billing) -> None:
    """Today is a partition (period-close runs compute it partially): readings that keep
    arriving for it are not late, the 02:00 run computes the day once it is complete."""
    add_organization(billing.engine, 1, customer=new_customer(billing.stripe_billing, "Alpha"))
    add_sensor(billing.engine, 11, 1, midnight(D0))
    assert billing.materialize_day(NOW.date()).success
    computed_an_hour_ago(billing.engine)
    add_readings(billing.engine, 11, NOW.date(), 3, ingested_at=NOW - timedelta(minutes=30))

    result = evaluate(billing, cursor=None)

    assert result.run_requests == [] and result.skip_reason is not None
    assert result.cursor == (NOW - timedelta(minutes=30)).isoformat()


def test_late_readings_beyond_stripes_window_are_recorded_expired_and_shown(
    billing: Billing,
) -> None:
    old = NOW.date() - timedelta(days=40)
    add_organization(billing.engine, 1, customer="cus_old")
    add_sensor(billing.engine, 1, 1, midnight(old) - timedelta(days=1))
    add_readings(billing.engine, 1, old, 3)
    assert billing.materialize_day(old).success
    computed_an_hour_ago(billing.engine)
    add_readings(billing.engine, 1, old, 2, ingested_at=NOW - timedelta(minutes=30))

    [request] = evaluate(billing, cursor=None).run_requests or []
    assert request.partition_key == old.isoformat()
    rerun = billing.materialize_day(date.fromisoformat(request.partition_key or ""))

    # Stripe cannot take the day's new value (5) any more: nothing is sent, the ledger keeps it
    # with the reason and the run's metadata shows it.
    assert rerun.success
    metadata = rerun.asset_materializations_for_node("stripe__meter_events")[0].metadata
    assert metadata["expired"].value == 1
    assert billing.emulator.meter_events() == []
    with billing.engine.connect() as connection:
        correction = connection.execute(
            text(
                "SELECT value, status, status_reason FROM billing.meter_ledger "
                "WHERE meter = 'temperature_readings' AND revision = 2"
            )
        ).one()
    assert (correction.value, correction.status) == (5, "expired")
    assert "35-day window" in correction.status_reason


def _period(engine: Engine, subscription: str, start: datetime, end: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO billing.billing_periods "
                "(stripe_subscription_id, period_start, period_end) VALUES (:s, :start, :end)"
            ),
            {"s": subscription, "start": start, "end": end},
        )


def _range(request: dg.RunRequest) -> tuple[str, str]:
    return (
        request.tags["dagster/asset_partition_range_start"],
        request.tags["dagster/asset_partition_range_end"],
    )


def test_each_boundary_instant_gets_one_closing_run_over_its_last_day(billing: Billing) -> None:
    today = NOW.date()
    ended = NOW.replace(microsecond=0) - timedelta(minutes=1)
    _period(billing.engine, "sub_mid", ended - timedelta(days=30), ended)
    # Calendar billing: every subscription's period ends at the same instant.
    for subscription in ("sub_calendar_1", "sub_calendar_2"):
        _period(billing.engine, subscription, midnight(D0) - timedelta(days=30), midnight(D2))
    _period(billing.engine, "sub_future", ended, ended + timedelta(days=30))  # not over yet
    _period(
        billing.engine,
        "sub_old",
        midnight(D0) - timedelta(days=40),
        midnight(D0) - timedelta(days=4),
    )

    # An instance of its own: which days were computed complete is read from its history.
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(period_close_sensor, instance, billing.database_url, None)
        requests = {str(r.run_key): r for r in result.run_requests or []}
        # Within Stripe's longest grace period (72 h) only, one run per instant.
        assert sorted(requests) == [
            f"period-close-{midnight(D2).isoformat()}",
            f"period-close-{ended.isoformat()}",
        ]
        mid = requests[f"period-close-{ended.isoformat()}"]
        assert mid.tags[PERIOD_CLOSE_TAG] == ended.isoformat()
        # A mid-day end: today's partial day, and the day before, never computed complete.
        assert _range(mid) == (D2.isoformat(), today.isoformat())
        # A midnight end closes the day before it (and the one before, never computed here).
        calendar = requests[f"period-close-{midnight(D2).isoformat()}"]
        assert _range(calendar) == (D0.isoformat(), D1.isoformat())

        # Once the day before was computed after it ended, the run covers its last day only.
        assert materialize_day(instance, billing.resources(), D2).success
        again = evaluate_sensor(period_close_sensor, instance, billing.database_url, None)
    closing = {str(r.run_key): _range(r) for r in again.run_requests or []}
    assert closing[f"period-close-{ended.isoformat()}"] == (today.isoformat(), today.isoformat())
