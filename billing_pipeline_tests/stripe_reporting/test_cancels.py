"""Downward corrections on raw `sum` meters: cancelled and re-sent whole, never a negative value.

Stripe's references disagree on negative meter event values, so each test runs with the
emulator accepting them and refusing them, on v1 and v2: the pipeline must be right under both.
Real Postgres, a real Dagster instance, the emulator over HTTP; Stripe's daily summaries are
compared with the test's own count of the source rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from billing_pipeline.cli import main
from billing_pipeline.stripe_client import RetryRule, StripeBilling
from billing_pipeline.stripe_reporting.cancels import cancel_rows
from billing_pipeline.stripe_reporting.checks import ledger_failed_rows
from billing_pipeline.stripe_reporting.dry_run import dry_run
from billing_pipeline.stripe_reporting.dry_run_report import render_text
from billing_pipeline.stripe_reporting.planning import MeterTarget, plan_window
from billing_pipeline.usage.meters import METERS
from billing_pipeline_tests.support.billing_month import readings_in
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.reporting import (
    ASSETS,
    Key,
    days_before,
    run_days,
    stripe_view,
)
from billing_pipeline_tests.support.stripe import TEST_KEY, new_customer
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

D1, D2 = days_before(3), days_before(2)
READINGS = next(m for m in METERS if m.name == "temperature_readings")
CHECKED = [*ASSETS, ledger_failed_rows]


def customer_with_readings(engine: Engine, stripe_billing: StripeBilling) -> str:
    """Customer Alpha holding organization 1, whose one sensor recorded 8 readings on D1."""
    alpha = new_customer(stripe_billing, "Alpha")
    add_organization(engine, 1, customer=alpha)
    add_sensor(engine, 11, 1, midnight(D1) - timedelta(days=3))
    add_readings(engine, 11, D1, 8)
    return alpha


def drop_readings(engine: Engine, sensor: int, since: datetime) -> None:
    """Late data: readings found to be duplicates and removed from the source."""
    with engine.begin() as connection:
        connection.execute(
            text("DELETE FROM temperature_readings WHERE sensor_id = :s AND recorded_at >= :t"),
            {"s": sensor, "t": since},
        )


def source_view(engine: Engine, customer: str) -> dict[Key, float]:
    """What Stripe should hold for organization 1's readings, from the source rows."""
    view = {}
    for day in (D1, D2):
        count = readings_in(engine, 1, midnight(day), midnight(day + timedelta(days=1)))
        if count:
            view[("temperature_readings", customer, day)] = float(count)
    return view


def readings_view(billing: StripeBilling, customer: str) -> dict[Key, float]:
    view = stripe_view(billing, [customer], D1, D2 + timedelta(days=2))
    return {key: value for key, value in view.items() if key[0] == "temperature_readings"}


def assert_nothing_negative_sent(control: EmulatorControl) -> None:
    assert [e["value"] for e in control.meter_events() if e["value"] < 0] == []
    assert control.error_reports() == []


def ledger(engine: Engine) -> list[tuple[str, int]]:
    """The readings meter's rows of D1 as (status, value), in revision order."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT status, value FROM billing.meter_ledger "
                "WHERE meter = 'temperature_readings' AND day = :day ORDER BY revision"
            ),
            {"day": D1},
        )
        return [(row.status, int(row.value)) for row in rows]


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_late_data_that_lowers_a_day_cancels_its_events_and_sends_the_whole_new_value(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
    negative_values: str,
    api: str,
) -> None:
    alpha = customer_with_readings(engine, stripe_billing)
    url = emulator_server.url
    assert run_days(dagster_instance, database_url, url, D1, meter_event_api=api).success
    assert readings_view(stripe_billing, alpha) == source_view(engine, alpha) != {}

    # Down twice (the second cancels the first's replacement), then up, then down to nothing.
    for since_hour in (18, 12):
        drop_readings(engine, 11, midnight(D1) + timedelta(hours=since_hour))
        result = run_days(
            dagster_instance, database_url, url, D1, assets=CHECKED, meter_event_api=api
        )
        assert result.success
        assert readings_view(stripe_billing, alpha) == source_view(engine, alpha)
    add_readings(engine, 11, D1, 2)
    assert run_days(dagster_instance, database_url, url, D1, meter_event_api=api).success
    assert readings_view(stripe_billing, alpha) == source_view(engine, alpha)
    drop_readings(engine, 11, midnight(D1))
    result = run_days(dagster_instance, database_url, url, D1, assets=CHECKED, meter_event_api=api)
    assert result.success
    assert readings_view(stripe_billing, alpha) == source_view(engine, alpha) == {}

    assert_nothing_negative_sent(emulator_control)
    # 8 sent; 6 replaces it; 4 replaces 6; +2; everything cancelled at the end, nothing new.
    assert ledger(engine) == [
        ("cancelled", 8),
        ("cancelled", 6),
        ("cancelled", 4),
        ("cancelled", 2),
    ]
    [check] = result.get_asset_check_evaluations()
    assert check.passed, check.metadata


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_day_lowered_after_stripes_cancel_window_is_recorded_and_shown_never_sent_negative(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
    negative_values: str,
    api: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alpha = customer_with_readings(engine, stripe_billing)
    url = emulator_server.url
    assert run_days(dagster_instance, database_url, url, D1, meter_event_api=api).success
    billed = source_view(engine, alpha)

    # A day later for Stripe: its events can no longer be cancelled.
    emulator_control.advance_clock(25 * 3600)
    drop_readings(engine, 11, midnight(D1) + timedelta(hours=18))
    for _ in range(2):  # the second run records nothing new
        result = run_days(
            dagster_instance, database_url, url, D1, assets=CHECKED, meter_event_api=api
        )
        assert result.success

    # Stripe keeps the old value; the over-billing is recorded, once, and nothing went out.
    assert readings_view(stripe_billing, alpha) == billed != source_view(engine, alpha)
    over_billed = int(billed[("temperature_readings", alpha, D1)]) - readings_in(
        engine, 1, midnight(D1), midnight(D2)
    )
    # Planned as a cancel (our clock says within 24 h); Stripe refused the cancel, so the whole
    # new value planned beside it was dropped unsent and the run planned the day again.
    assert ledger(engine) == [("sent", 8), ("superseded", 6), ("uncorrectable", -over_billed)]
    assert_nothing_negative_sent(emulator_control)
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["rows"].value == 1
    assert "credit the customer" in str(check.metadata["details"]).lower()

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", url)
    assert main(["status", "--from", D1.isoformat(), "--to", D1.isoformat()]) == 0
    output = capsys.readouterr().out
    assert f"- {D1} temperature_readings: 1 uncorrectable" in output


def test_planning_records_a_decrease_of_events_past_the_cancel_window_instead_of_cancelling(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    negative_values: str,
) -> None:
    # Our own side of the 24 h rule: planned a day after the send, nothing is marked to cancel.
    customer_with_readings(engine, stripe_billing)
    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success
    drop_readings(engine, 11, midnight(D1) + timedelta(hours=21))
    usage = [m for m in ASSETS if m.key.path[-1] == "temperature_readings"]
    assert run_days(dagster_instance, database_url, emulator_server.url, D1, assets=usage).success

    later = datetime.now(UTC) + timedelta(hours=24)
    plan_window(engine, MeterTarget(READINGS, None), D1, D2, now=later)
    plan_window(engine, MeterTarget(READINGS, None), D1, D2, now=later)
    now_counted = readings_in(engine, 1, midnight(D1), midnight(D2))
    assert ledger(engine) == [("sent", 8), ("uncorrectable", now_counted - 8)]


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_cancel_whose_answer_was_lost_is_retried_and_already_cancelled_counts_as_done(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
    negative_values: str,
    api: str,
) -> None:
    alpha = customer_with_readings(engine, stripe_billing)
    url = emulator_server.url
    assert run_days(dagster_instance, database_url, url, D1, meter_event_api=api).success
    drop_readings(engine, 11, midnight(D1) + timedelta(hours=12))
    usage = [m for m in ASSETS if m.key.path[-1] == "temperature_readings"]
    assert run_days(dagster_instance, database_url, url, D1, assets=usage).success
    plan_window(engine, MeterTarget(READINGS, None), D1, D2)

    # Stripe applies the cancel but every answer is lost: the outcome is unknown.
    emulator_control.set_faults(drop_rate=1.0)
    report = cancel_rows(
        engine,
        StripeBilling(TEST_KEY, url, retry=RetryRule(2, 0.01)),
        ["temperature_readings"],
    )
    emulator_control.set_faults()
    assert report.transient_failures == 1
    assert ledger(engine)[0] == ("cancelling", 8)
    assert readings_view(stripe_billing, alpha) == {}  # cancelled; its replacement waits

    # The next run cancels again ("already cancelled": done) and sends the whole new value.
    assert run_days(dagster_instance, database_url, url, D1, meter_event_api=api).success
    assert readings_view(stripe_billing, alpha) == source_view(engine, alpha) != {}
    assert ledger(engine) == [("cancelled", 8), ("sent", 4)]
    assert_nothing_negative_sent(emulator_control)


def test_the_dry_run_lists_the_cancels_and_the_whole_new_value_and_changes_nothing(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    negative_values: str,
) -> None:
    alpha = customer_with_readings(engine, stripe_billing)
    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success
    drop_readings(engine, 11, midnight(D1) + timedelta(hours=12))

    result = dry_run(engine, [MeterTarget(READINGS, None)], D1, D2, recomputed=(D1, D2))
    assert [r.value for r in result.to_cancel] == [8]
    new_value = readings_in(engine, 1, midnight(D1), midnight(D2))
    assert [(w.row.value, w.row.target_value) for w in result.would_send] == [
        (new_value, new_value)
    ]
    assert "1 events to cancel" in render_text(result, D1, D2)
    assert ledger(engine) == [("sent", 8)]
    assert readings_view(stripe_billing, alpha) == {("temperature_readings", alpha, D1): 8.0}
