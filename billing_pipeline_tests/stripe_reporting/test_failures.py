"""Crashes, Stripe's 24 h memory, rejected rows, restored backups, concurrent and killed runs.

Through the real assets on a real Dagster instance and the emulator over HTTP, for both kinds of
Stripe meter where the kind matters; Stripe's daily summaries are compared with values written
out here from the source rows.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from typing import Any

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from sqlalchemy import Engine, text

from billing_pipeline.resources import PostgresResource
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.locking import LOCK_KEY
from billing_pipeline.stripe_reporting.meter_errors import (
    ReportedError,
    mark_reported_rows_rejected,
)
from billing_pipeline.stripe_reporting.reconciliation_check import build_reconciliation_check
from billing_pipeline.usage.assets import build_usage_assets
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.meter_kinds import recreate_meters
from billing_pipeline_tests.support.reporting import (
    ASSETS_WITHOUT_RETRIES,
    TODAY,
    days_before,
    ledger_statuses,
    reconcile_days,
    run_days,
    stripe_view,
    subscribed_customers,
)
from billing_pipeline_tests.support.stripe import new_customer
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

D1, D2 = days_before(4), days_before(3)
SETTLED = build_reconciliation_check(settle_window=timedelta(0))


def one_paying_organization(engine: Engine, billing: StripeBilling, readings: int) -> str:
    alpha = new_customer(billing, "Alpha")
    add_organization(engine, 1, customer=alpha)
    add_sensor(engine, 11, 1, midnight(D1) - timedelta(days=3))
    add_readings(engine, 11, D1, readings)
    return alpha


def test_a_worker_dying_after_stripe_accepted_bills_once_even_a_day_later(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
    meter_kind: str,
) -> None:
    # Case 2: Stripe accepted the events, the worker died before the ledger said so (the rows
    # are back to what they were before the mark: pending, attempted), and the day is run again
    # more than 24 h later, when Stripe no longer deduplicates the identifiers.
    alpha = one_paying_organization(engine, stripe_billing, 5)
    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE billing.meter_ledger SET status = 'pending', sent_at = NULL, "
                "first_attempted_at = now() - interval '25 hours', "
                "updated_at = now() - interval '25 hours'"
            )
        )
    emulator_control.advance_clock(25 * 3600)

    result = run_days(dagster_instance, database_url, emulator_server.url, D1)

    assert result.success
    assert stripe_view(stripe_billing, [alpha], D1, TODAY) == {
        ("active_sensors", alpha, D1): 1,
        ("temperature_readings", alpha, D1): 5,
    }
    assert ledger_statuses(engine) == {"sent": 2}
    metadata = result.asset_materializations_for_node("stripe__meter_events")[0].metadata
    if meter_kind == "raw":
        # The counter's difference was settled against Stripe's daily total, never resent; the
        # gauge carries a whole value, so resending it is harmless.
        assert metadata["settled_sent"].value == 1
        assert Counter(e["event_name"] for e in emulator_control.meter_events()) == {
            "temperature_readings": 1,
            "active_sensors": 2,
        }


def test_an_attempt_stripe_never_received_is_settled_absent_and_billed_again(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
) -> None:
    # Case 2's other outcome, on raw meters (the only ones with in-doubt rows): the worker died
    # after recording its attempt but before Stripe received the event.
    recreate_meters(emulator_control, stripe_billing, "raw")
    alpha = one_paying_organization(engine, stripe_billing, 5)
    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success
    with engine.begin() as connection:
        identifier = connection.execute(
            text("SELECT identifier FROM billing.meter_ledger WHERE meter = 'temperature_readings'")
        ).scalar_one()
        stripe_billing.client.v1.billing.meter_event_adjustments.create(
            {
                "event_name": "temperature_readings",
                "type": "cancel",
                "cancel": {"identifier": identifier},
            }
        )  # as if it had never arrived
        connection.execute(
            text(
                "UPDATE billing.meter_ledger SET status = 'pending', sent_at = NULL, "
                "first_attempted_at = now() - interval '25 hours', "
                "updated_at = now() - interval '25 hours' WHERE identifier = :identifier"
            ),
            {"identifier": identifier},
        )
    emulator_control.advance_clock(25 * 3600)

    result = run_days(dagster_instance, database_url, emulator_server.url, D1)

    assert result.success
    metadata = result.asset_materializations_for_node("stripe__meter_events")[0].metadata
    assert metadata["settled_absent"].value == 1
    assert stripe_view(stripe_billing, [alpha], D1, TODAY) == {
        ("active_sensors", alpha, D1): 1,
        ("temperature_readings", alpha, D1): 5,
    }
    assert ledger_statuses(engine) == {"sent": 2, "absent": 1}


def test_a_rejected_row_never_blocks_later_corrections(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    meter_kind: str,
) -> None:
    # Case 5: Stripe reports the day's events invalid after accepting them (or an operator marks
    # them rejected); their identifiers are spent. Later corrections still go out.
    alpha = one_paying_organization(engine, stripe_billing, 5)
    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success
    with engine.begin() as connection:
        rows = connection.execute(text("SELECT identifier, event_name FROM billing.meter_ledger"))
        for row in rows.all():
            # Stripe dropped them (cancelled within 24 h, as an adjustment does).
            stripe_billing.client.v1.billing.meter_event_adjustments.create(
                {
                    "event_name": row.event_name,
                    "type": "cancel",
                    "cancel": {"identifier": row.identifier},
                }
            )
        identifiers = connection.execute(
            text("SELECT identifier FROM billing.meter_ledger")
        ).scalars()
        errors = [ReportedError(i, "archived_meter", "rejected") for i in identifiers]
        assert len(mark_reported_rows_rejected(connection, "evt_report", errors)) == 2
    add_readings(engine, 11, D1, 2)  # and the day is corrected, twice
    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success
    add_readings(engine, 11, D1, 1)
    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success

    assert stripe_view(stripe_billing, [alpha], D1, TODAY) == {
        ("active_sensors", alpha, D1): 1,
        ("temperature_readings", alpha, D1): 5 + 2 + 1,
    }


def test_after_a_ledger_restore_a_replanned_revision_is_never_taken_for_delivered(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    meter_kind: str,
) -> None:
    # Case 10: the ledger is restored from a backup taken before a correction was sent; the next
    # correction reuses the revision number with another value, within Stripe's 24 h memory.
    alpha = one_paying_organization(engine, stripe_billing, 5)
    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE ledger_backup AS SELECT * FROM billing.meter_ledger"))
    add_readings(engine, 11, D1, 2)
    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM billing.meter_ledger"))
        connection.execute(text("INSERT INTO billing.meter_ledger SELECT * FROM ledger_backup"))
        connection.execute(text("DROP TABLE ledger_backup"))
    add_readings(engine, 11, D1, 2)

    result = run_days(dagster_instance, database_url, emulator_server.url, D1)

    assert result.success
    metadata = result.asset_materializations_for_node("stripe__meter_events")[0].metadata
    assert metadata["already_in_stripe"].value == 0  # no duplicate answer taken for "delivered"
    readings = stripe_view(stripe_billing, [alpha], D1, TODAY)[("temperature_readings", alpha, D1)]
    if meter_kind == "pre_aggregated":
        assert readings == 5 + 2 + 2  # the whole value replaced the lost revision's
    else:
        # A raw meter adds the restored ledger's difference to the one it forgot: Stripe holds
        # 11, and reconciliation names the day instead of reporting it billed.
        assert readings == 5 + 2 + 4
        [evaluation] = reconcile_days(
            dagster_instance, database_url, emulator_server.url, D1, D1, SETTLED
        ).values()
        assert not evaluation.passed
        assert f"| temperature_readings | {D1} | {alpha} | 1 | 9 | 9 | 11" in str(
            evaluation.metadata["drift_details"].value
        )


def _refresh_usage(database_url: str, instance_ref: InstanceRef, day: date) -> bool:
    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        return dg.materialize(
            build_usage_assets(),
            partition_key=day.isoformat(),
            instance=instance,
            resources={"postgres": PostgresResource(database_url=database_url)},
            raise_on_error=False,
        ).success


def test_two_refreshes_of_one_day_at_once_both_succeed(
    engine: Engine, database_url: str, dagster_instance: dg.DagsterInstance
) -> None:
    # Case 6: the schedule and the late-data sensor refresh the same day at the same moment.
    add_organization(engine, 1)
    for sensor in range(1, 21):
        add_sensor(engine, sensor, 1, midnight(D1) - timedelta(days=1))
        add_readings(engine, sensor, D1, 50)
    ref = dagster_instance.get_ref()
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = [pool.submit(_refresh_usage, database_url, ref, D1) for _ in range(8)]
        assert all(run.result(timeout=300) for run in runs)
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT meter, value FROM billing.daily_usage WHERE day = :day ORDER BY meter"),
            {"day": D1},
        ).all()
    assert [tuple(row) for row in stored] == [
        ("active_sensors", 20),
        ("temperature_readings", 1000),
    ]


def _report_in_own_process(
    instance_ref: InstanceRef, database_url: str, api_base: str, api: str = "v1"
) -> None:
    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        run_days(instance, database_url, api_base, D1, D2, meter_event_api=api)


def _report_once_in_own_process(
    instance_ref: InstanceRef, database_url: str, api_base: str, succeeded: Any
) -> None:
    """One attempt (no step retries), so its end shows when its sender stopped."""
    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        result = run_days(instance, database_url, api_base, D1, D2, assets=ASSETS_WITHOUT_RETRIES)
        succeeded.value = result.success


# The reporting lock of this test's database only: other test sessions (other databases on the
# same server) hold the same key at the same time.
_THIS_DATABASES_LOCK = (
    "locktype = 'advisory' AND granted AND objid = hashtext(:key)::oid "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _reporting_lock_holders(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(f"SELECT count(*) FROM pg_locks WHERE {_THIS_DATABASES_LOCK}"),
                {"key": LOCK_KEY},
            ).scalar_one()
        )


def _thirty_paying_organizations(engine: Engine, billing: StripeBilling) -> None:
    for organization in range(1, 31):
        add_organization(engine, organization, new_customer(billing, f"C{organization}"))
        add_sensor(engine, organization, organization, midnight(D1) - timedelta(days=1))
        add_readings(engine, organization, D1, organization)


def _expected_view(engine: Engine) -> tuple[list[str], dict[tuple[str, str, date], float]]:
    """What Stripe must hold for `_thirty_paying_organizations`, from the rows written there."""
    customers = subscribed_customers(engine)
    expected: dict[tuple[str, str, date], float] = {}
    for organization, customer in enumerate(customers, start=1):
        expected[("active_sensors", customer, D1)] = 1
        expected[("active_sensors", customer, D2)] = 1
        expected[("temperature_readings", customer, D1)] = organization
    return customers, expected


def test_a_run_that_loses_its_lock_stops_sending_and_the_next_sends_each_row_once(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
) -> None:
    """The reporting lock lives on a connection: ended by `pg_terminate_backend` mid-send, the
    lock is gone, and the run must stop sending at once instead of racing the next lock holder."""
    _thirty_paying_organizations(engine, stripe_billing)
    customers, expected = _expected_view(engine)
    # Slow answers: sending all 90 rows would take over 10 s, so stopping early is visible.
    emulator_control.set_faults(latency_ms=1000)
    context = multiprocessing.get_context("spawn")
    succeeded = context.Value("b", True)
    process = context.Process(
        target=_report_once_in_own_process,
        args=(dagster_instance.get_ref(), database_url, emulator_server.url, succeeded),
    )
    process.start()
    deadline = time.monotonic() + 120
    while not (_reporting_lock_holders(engine) and emulator_control.meter_events()):
        assert time.monotonic() < deadline, "the run never took the lock and sent"
        time.sleep(0.05)
    with engine.connect() as connection:  # the lock's connection, ended by the server
        ended = connection.execute(
            text(f"SELECT pg_terminate_backend(pid) FROM pg_locks WHERE {_THIS_DATABASES_LOCK}"),
            {"key": LOCK_KEY},
        )
        assert ended.scalars().all() == [True]
    lost_at = time.monotonic()

    process.join(timeout=60)
    stopped_after = time.monotonic() - lost_at
    sent_by_first = len(emulator_control.meter_events())
    assert not succeeded.value, "a run that lost its lock must not report success"
    # Sending all 90 rows takes 12 s or more; a run that ignored the lost lock sends them all
    # (and succeeds). The bound on the process's end is loose: Dagster's teardown follows.
    assert sent_by_first < len(expected)
    assert stopped_after < 30, f"the run went on for {stopped_after:.1f} s without its lock"
    emulator_control.set_faults()

    result = run_days(dagster_instance, database_url, emulator_server.url, D1, D2)

    assert result.success
    assert stripe_view(stripe_billing, customers, D1, TODAY) == expected
    assert len(emulator_control.meter_events()) == len(expected)  # nothing twice
    assert "400" not in emulator_control.request_count()  # no identifier sent twice either


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_run_killed_while_reporting_never_blocks_later_billing(
    api: str,
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
) -> None:
    # Case 11: `kill -9` of a reporting run in the middle of sending.
    _thirty_paying_organizations(engine, stripe_billing)
    emulator_control.set_faults(latency_ms=300)
    process = multiprocessing.get_context("spawn").Process(
        target=_report_in_own_process,
        args=(dagster_instance.get_ref(), database_url, emulator_server.url, api),
    )
    process.start()
    deadline = time.monotonic() + 120
    while _reporting_lock_holders(engine) == 0:
        assert time.monotonic() < deadline, "the run never took the reporting lock"
        time.sleep(0.1)
    while not emulator_control.meter_events():  # killed in the middle of sending
        assert time.monotonic() < deadline, "the run never sent anything"
        time.sleep(0.05)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    emulator_control.set_faults()

    began = time.monotonic()
    result = run_days(dagster_instance, database_url, emulator_server.url, D2, meter_event_api=api)

    assert result.success
    assert time.monotonic() - began < 60
    customers, expected = _expected_view(engine)
    view = stripe_view(stripe_billing, customers, D1, TODAY)
    assert view == expected
    assert len(emulator_control.meter_events()) == len(expected)  # nothing twice
