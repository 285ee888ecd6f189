"""`billing-pipeline status`, the dry run (CLI and run config) and `billing/status`, end to end.

Real Postgres, a real Dagster instance, the emulator over HTTP; every expected number is written
out from the seeded rows below, not read back from the pipeline's own SQL.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from billing_pipeline.cli import main
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.assets import planned_days
from billing_pipeline.stripe_reporting.dry_run import dry_run
from billing_pipeline.stripe_reporting.meter_sync import verify_meters
from billing_pipeline.stripe_reporting.planning import MeterTarget
from billing_pipeline.usage.assets import build_usage_assets
from billing_pipeline.usage.meters import METERS
from billing_pipeline.webhooks.checks import stripe_webhook_dead_letters
from billing_pipeline.webhooks.processing import MAX_ATTEMPTS, process_open_events
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import evaluate_checks
from billing_pipeline_tests.support.meter_kinds import recreate_meters
from billing_pipeline_tests.support.reporting import (
    ASSETS,
    days_before,
    move_subscriptions,
    refresh_billing_status,
    reporting_resources,
    run_days,
)
from billing_pipeline_tests.support.stripe import TEST_KEY, new_customer
from billing_pipeline_tests.support.webhooks import checkout_completed, end_backoffs, store_events
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

D0, D1 = days_before(3), days_before(2)


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    emulator_server: StripeEmulator,
    dagster_home: Path,
) -> None:
    """The environment the `billing-pipeline` command reads: this database, the emulator, and
    a Dagster instance of this test's own (the checks' latest evaluations)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", emulator_server.url)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))


def seed(engine: Engine, paying: dict[int, str], readings: dict[int, dict[date, int]]) -> None:
    """Organizations (paying ones with a customer, others free), one sensor each, readings."""
    for organization in readings:
        add_organization(engine, organization, customer=paying.get(organization))
        add_sensor(engine, organization * 10, organization, midnight(D0) - timedelta(days=10))
        for day, count in readings[organization].items():
            add_readings(engine, organization * 10, day, count)


def ledger_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(text("SELECT count(*) FROM billing.meter_ledger")).scalar_one()
        )


def table(output: str) -> dict[tuple[str, str], list[str]]:
    """The status table's day lines, keyed by (day, meter)."""
    lines = [line.split() for line in output.splitlines()]
    return {
        (cells[0], cells[1]): cells[2:]
        for cells in lines
        if cells[:1] in ([D0.isoformat()], [D1.isoformat()])
    }


def test_status_shows_usage_billed_unbilled_failed_and_stripe_per_day_and_meter(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alpha = new_customer(stripe_billing, "Alpha")
    # 1 pays, 2's customer is unknown to Stripe (its events fail), 3 is on the free tier.
    readings = {1: {D0: 10, D1: 4}, 2: {D0: 3}, 3: {D0: 5, D1: 2}}
    seed(engine, {1: alpha, 2: "cus_unknown"}, readings)
    emulator_control.set_unknown_customer_mode("reject")
    result = run_days(dagster_instance, database_url, emulator_server.url, D0, D1)
    assert not result.success  # the unknown customer's events failed

    assert main(["status", "--from", D0.isoformat(), "--to", D1.isoformat(), "--stripe"]) == 0
    output = capsys.readouterr().out
    # usage, billed, unbilled, failed, rejected, in_doubt, pending, expired, stripe
    expected = {}
    for day in (D0, D1):
        usage = sum(r.get(day, 0) for r in readings.values())
        free, paid = readings[3].get(day, 0), readings[1][day]
        failed = 1 if readings[2].get(day) else 0
        expected[(day.isoformat(), "temperature_readings")] = [usage, paid, free, failed]
        # One sensor per organization, active every day: 3 in all, 1 free, 1 paid, 1 failing.
        expected[(day.isoformat(), "active_sensors")] = [3, 1, 1, 1]
    shown = table(output)
    assert {key: [int(c) for c in cells[:4]] for key, cells in shown.items()} == expected
    assert all(cells[4:8] == ["0", "0", "0", "0"] for cells in shown.values())
    assert {key: float(cells[8]) for key, cells in shown.items()} == {
        key: float(values[1]) for key, values in expected.items()
    }
    assert "needs attention:\n" in output
    assert f"- {D0} temperature_readings: 1 failed, billed 10 ≠ billable 13\n" in output
    assert f"- {D1} temperature_readings" not in output  # fully billed

    # Without --stripe nothing is asked of Stripe.
    assert main(["status", "--from", D0.isoformat(), "--to", D1.isoformat()]) == 0
    assert "not reconciled" in capsys.readouterr().out

    # The dry run shows that the next run retries the unknown customer's three failed rows.
    assert main(["stripe", "dry-run", "--from", D0.isoformat(), "--to", D1.isoformat()]) == 0
    output = capsys.readouterr().out
    assert output.count("cus_unknown") == 3
    assert output.count("retry after a failure") == 3
    assert "would send 3 meter events" in output


def test_dry_run_lists_exactly_what_the_next_run_sends_and_writes_nothing(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alpha, beta = new_customer(stripe_billing, "Alpha"), new_customer(stripe_billing, "Beta")
    seed(engine, {1: alpha, 2: beta}, {1: {D0: 6, D1: 2}, 2: {D0: 4}, 3: {D0: 9}})
    usage_only = build_usage_assets()
    assert run_days(dagster_instance, database_url, None, D0, D1, assets=usage_only).success
    remote = verify_meters(stripe_billing, METERS)
    targets = [MeterTarget(m, remote[m.name].event_time_window) for m in METERS]

    def check_phase(reasons: Counter[str]) -> None:
        before_rows, before_events = ledger_count(engine), len(emulator_control.meter_events())
        plan = planned_days(D0, D1 + timedelta(days=1), datetime.now(UTC))
        planned = dry_run(engine, targets, *plan)
        assert main(["stripe", "dry-run", "--from", D0.isoformat(), "--to", D1.isoformat()]) == 0
        output = capsys.readouterr().out
        assert ledger_count(engine) == before_rows
        assert len(emulator_control.meter_events()) == before_events
        assert Counter(w.why for w in planned.would_send) == reasons
        assert f"would send {len(planned.would_send)} meter events" in output
        for would in planned.would_send:
            assert f"{would.row.stripe_customer_id}" in output and would.why in output
        assert run_days(dagster_instance, database_url, emulator_server.url, D0, D1).success
        sent = emulator_control.meter_events()[before_events:]
        assert sorted((e["identifier"], e["customer"], e["value"]) for e in sent) == sorted(
            (w.row.identifier, w.row.stripe_customer_id, w.row.value) for w in planned.would_send
        )

    # First run, each a new day (org 3 is free): readings of 1 on D0, D1 and of 2 on D0; the
    # sensors of 1 and 2 on both days.
    check_phase(Counter({"new day": 7}))
    # Organization 1 moves to Beta: Alpha's days are reversed on both meters; Beta's readings
    # grow on D0 (4 → 10) and start on D1 (a move), its sensors count 2 instead of 1.
    move_subscriptions(engine, 1, beta)
    check_phase(
        Counter(
            {
                f"reversal: customer move to {beta}": 4,
                "correction: source 4 → 10": 1,
                "correction: source 1 → 2": 2,
                f"customer move from {alpha}": 1,
            }
        )
    )


def test_dry_run_says_nothing_to_send_and_counts_the_usage_the_run_recomputes(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alpha = new_customer(stripe_billing, "Alpha")
    seed(engine, {1: alpha}, {1: {D0: 6, D1: 2}})
    assert run_days(dagster_instance, database_url, emulator_server.url, D0, D1).success
    days = ["--from", D0.isoformat(), "--to", D1.isoformat()]

    assert main(["stripe", "dry-run", *days]) == 0
    output = capsys.readouterr().out
    assert "nothing to send" in output and "would send 0 meter events" in output

    # Three late readings of D0, not yet in `billing.daily_usage`: the run of D0..D1 recomputes
    # the usage before it plans, so it sends the correction, and the dry run must say so.
    add_readings(engine, 10, D0, 3)
    before = len(emulator_control.meter_events())
    assert main(["stripe", "dry-run", *days]) == 0
    output = capsys.readouterr().out
    assert "correction: source 6 → 9" in output and "would send 1 meter events" in output
    assert run_days(dagster_instance, database_url, emulator_server.url, D0, D1).success
    sent = emulator_control.meter_events()[before:]
    assert [(e["customer"], e["value"]) for e in sent] in ([(alpha, 9)], [(alpha, 3)])


def test_status_takes_a_gauges_latest_part_on_a_day_cut_by_a_period_end(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recreate_meters(emulator_control, stripe_billing, "pre_aggregated")  # hourly: days are cut
    alpha = new_customer(stripe_billing, "Alpha")
    seed(engine, {1: alpha}, {1: {D0: 4}})
    # A period ends at 12:00 on D0; a second sensor arrives at 15:00: 1 sensor in the first part,
    # 2 in the second and at the day's end.
    noon = midnight(D0) + timedelta(hours=12)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO billing.billing_periods (stripe_subscription_id, period_start, "
                "period_end, stripe_customer_id) VALUES (:sub, :start, :end, :customer)"
            ),
            {
                "sub": f"sub_{alpha}",
                "start": noon - timedelta(days=30),
                "end": noon,
                "customer": alpha,
            },
        )
    add_sensor(engine, 11, 1, noon + timedelta(hours=3))
    assert run_days(dagster_instance, database_url, emulator_server.url, D0).success
    with engine.connect() as connection:
        sensors_at_day_end = connection.execute(
            text(
                "SELECT count(*) FROM sensors WHERE organization_id = 1 AND created_at < :end "
                "AND (deactivated_at IS NULL OR deactivated_at >= :end)"
            ),
            {"end": midnight(D1)},
        ).scalar_one()

    assert main(["status", "--from", D0.isoformat(), "--to", D0.isoformat(), "--stripe"]) == 0
    output = capsys.readouterr().out

    usage, billed, unbilled = table(output)[(D0.isoformat(), "active_sensors")][:3]
    assert (int(usage), int(billed), int(unbilled)) == (sensors_at_day_end, sensors_at_day_end, 0)
    assert output.rstrip().endswith("healthy")


def test_dry_run_config_sends_nothing_and_billing_status_asset_reports(
    engine: Engine,
    database_url: str,
    synchronous_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
) -> None:
    # An instance of its own: the verdict reads every check's latest evaluation, and the
    # session's instance holds other tests' failed checks on the same days.
    instance = synchronous_instance
    alpha = new_customer(stripe_billing, "Alpha")
    seed(engine, {1: alpha}, {1: {D0: 7}, 3: {D0: 5}})
    resources = reporting_resources(database_url, emulator_server.url)
    partition = D0.isoformat()
    dry = dg.materialize(
        ASSETS,
        partition_key=partition,
        instance=instance,
        resources=resources,
        run_config=dg.RunConfig({"stripe__meter_events": {"config": {"dry_run": True}}}),
    )
    [materialization] = [m for m in dry.asset_materializations_for_node("stripe__meter_events")]
    metadata = materialization.metadata
    assert metadata["dry_run"].value is True
    assert metadata["would_send"].value == 2  # both meters, organization 1, D0
    assert "new day" in metadata["would_send_details"].value  # type: ignore[operator]
    assert ledger_count(engine) == 0
    assert emulator_control.meter_events() == []

    assert run_days(instance, database_url, emulator_server.url, D0).success
    report = refresh_billing_status(instance, database_url, emulator_server.url)
    figures = report.metadata
    assert figures["verdict"].value == "healthy"
    assert figures["failed"].value == 0
    # Organization 3 is free: its 5 readings and its one sensor are unbilled.
    assert figures["unbilled/temperature_readings"].value == 5
    assert figures["unbilled/active_sensors"].value == 1
    assert figures["usage/temperature_readings"].value == 7 + 5
    assert "| day | meter |" in str(figures["status"].value)


def test_a_failed_check_makes_status_need_attention_and_names_it(
    engine: Engine,
    database_url: str,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    dagster_home: Path,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every ledger row is fine and every day billed, but a Stripe event is dead-lettered: the
    table alone would say healthy; the verdict takes the check's latest evaluation too."""
    alpha = new_customer(stripe_billing, "Alpha")
    seed(engine, {1: alpha}, {1: {D0: 6}})
    window = ["--from", D0.isoformat(), "--to", D0.isoformat()]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert run_days(instance, database_url, emulator_server.url, D0).success
        assert main(["status", *window]) == 0
        assert capsys.readouterr().out.rstrip().endswith("healthy")

        # An event whose organization does not exist fails every attempt and is dead-lettered.
        poison = checkout_completed(987654, "cus_x", "sub_x", int(midnight(D0).timestamp()))
        store_events(engine, [poison])
        for _ in range(MAX_ATTEMPTS):
            process_open_events(engine)
            end_backoffs(engine)
        checks = evaluate_checks(instance, database_url, [stripe_webhook_dead_letters])
        assert not checks["stripe_webhook_dead_letters"].passed

        assert main(["status", *window]) == 0
        output = capsys.readouterr().out
        verdict = output[output.index("needs attention:") :]
        [line] = verdict.splitlines()[1:]  # the day itself is fully billed
        assert line.startswith("- check stripe_subscriptions:stripe_webhook_dead_letters failed")
        assert "(error, run " in line and "dead_lettered 1" in line

        # billing/status says the same.
        report = refresh_billing_status(instance, database_url, emulator_server.url)
        assert report.metadata["healthy"].value is False
        assert report.metadata["failed_checks"].value == 1
        assert report.metadata["failed_check_names"].value == [
            "stripe_subscriptions:stripe_webhook_dead_letters"
        ]
        assert "stripe_webhook_dead_letters failed" in str(report.metadata["verdict"].value)


def test_status_says_when_it_cannot_read_the_checks(
    engine: Engine,
    cli_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.setenv("BILLING_PIPELINE_DATA_DIR", "/nonexistent")  # no demo runs there
    assert main(["status", "--from", D0.isoformat(), "--to", D0.isoformat()]) == 0
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith(
            "healthy as far as the ledger shows; Dagster's checks not read: "
            "DAGSTER_HOME is not set (Dagster's instance)"
        )
    )


def test_status_of_the_last_days_leaves_out_today_and_says_which_days_it_shows(
    engine: Engine, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Today has no complete data yet: "the last 7 days" are the 7 that have ended."""
    today = datetime.now(UTC).date()
    add_organization(engine, 1)
    add_sensor(engine, 10, 1, midnight(today) - timedelta(days=30))
    assert main(["status", "--days", "7"]) == 0
    output = capsys.readouterr().out
    first, last = today - timedelta(days=7), today - timedelta(days=1)
    assert output.startswith(f"billing status {first} to {last} (7 days)\n")
    assert str(today) not in output
