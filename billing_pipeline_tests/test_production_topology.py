"""The daily billing run, and a late-data correction, through Dagster's production topology.

A gRPC code server, a webserver and a daemon as separate processes on an instance configured
like docs/dagster.production.yaml (Postgres storage, the queued run coordinator, each run in a
process of its own): the run is submitted to the webserver's GraphQL API, queued, dequeued by
the daemon, executed by a run worker the code server starts, and reports to Stripe (the
emulator) what the test computes from the rows it seeded. This is the path the Helm chart takes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import Engine

from billing_pipeline import config
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline_tests.support.alert_sinks import RecordingSink
from billing_pipeline_tests.support.billing_month import readings_in
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.processes import (
    RUN_TIMEOUT,
    production_topology,
    topology_env,
)
from billing_pipeline_tests.support.reporting import stripe_value
from billing_pipeline_tests.support.stripe import new_customer
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator


@pytest.mark.processes
@pytest.mark.timeout(300)
def test_the_daemon_completes_the_daily_billing_run(
    engine: Engine,
    database_url: str,
    dagster_home: Path,
    dagster_pg_url: str,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
) -> None:
    day = datetime.now(UTC).date() - timedelta(days=1)  # what the 02:00 schedule bills
    customer = stripe_billing.client.v1.customers.create({"name": "Org 1"}).id
    add_organization(engine, 1, customer=customer)
    add_organization(engine, 2)  # no subscription: the free tier, never sent
    add_sensor(engine, 1, 1, midnight(day) - timedelta(days=3))
    add_sensor(engine, 2, 1, midnight(day) + timedelta(hours=6))
    add_sensor(engine, 3, 2, midnight(day) - timedelta(days=3))
    readings = {1: 7, 2: 5, 3: 9}
    for sensor, count in readings.items():
        add_readings(engine, sensor, day, count)
    expected = {("active_sensors", customer): 2, ("temperature_readings", customer): 7 + 5}

    env = topology_env(database_url, dagster_home, dagster_pg_url, emulator_server.url)
    # Creating the instance here also creates Dagster's tables before three processes race to.
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        production_topology(dagster_home, env) as topology,
    ):
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        answer = topology.launch("daily_billing", {"dagster/partition": day.isoformat()})
        assert answer["__typename"] == "LaunchRunSuccess", answer
        assert answer["run"]["status"] == "QUEUED"  # the daemon, not the webserver, starts it
        run = topology.wait_for_run(instance, answer["run"]["runId"])

        assert run.status == dg.DagsterRunStatus.SUCCESS, topology.logs()
        events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
        # Queued by the webserver; only the daemon's queued-run coordinator starts queued runs.
        lifecycle = [
            dg.DagsterEventType.RUN_ENQUEUED,
            dg.DagsterEventType.RUN_STARTING,
            dg.DagsterEventType.RUN_START,
            dg.DagsterEventType.RUN_SUCCESS,
        ]
        assert [e.event_type for e in events if e.event_type in lifecycle] == lifecycle
        # The steps ran in a run worker of their own, not in any of the three servers.
        step_pids = {e.pid for e in events if e.step_key is not None and e.pid is not None}
        assert len(step_pids) == 1
        assert step_pids.isdisjoint(topology.pids() | {os.getpid()})

    sent = {(e["event_name"], e["customer"]): e["value"] for e in emulator_control.meter_events()}
    assert sent == expected
    identifiers = {e["identifier"] for e in emulator_control.meter_events()}
    # bp-<meter>-<customer>-<day>-r1-<digest of the value>
    assert {i.rsplit("-", 1)[0] for i in identifiers} == {
        f"bp-{meter}-{customer}-{day:%Y%m%d}-r1" for meter, customer in expected
    }


@pytest.mark.processes
@pytest.mark.timeout(300)
def test_the_daemon_rebills_a_day_whose_readings_arrived_late(
    billing: Billing, dagster_home: Path, dagster_pg_url: str
) -> None:
    """`late_readings_sensor` as the daemon evaluates it: readings ingested after their day was
    billed are noticed at the sensor's first tick, and the run it launches brings Stripe to the
    day's new total."""
    day = datetime.now(UTC).date() - timedelta(days=1)
    customer = new_customer(billing.stripe_billing, "Org 1")
    add_organization(billing.engine, 1, customer=customer)
    add_sensor(billing.engine, 1, 1, midnight(day) - timedelta(days=3))
    add_readings(billing.engine, 1, day, 6)
    assert billing.materialize_day(day).success
    # A gateway delivers 4 more of its readings now, after the day was computed (complete).
    add_readings(billing.engine, 1, day, 4, ingested_at=datetime.now(UTC))
    whole_day = (midnight(day), midnight(day) + timedelta(days=1))
    assert stripe_value(billing.stripe_billing, "temperature_readings", customer, *whole_day) == 6

    env = topology_env(billing.database_url, dagster_home, dagster_pg_url, billing.api_base)
    launched = dg.RunsFilter(tags={"dagster/sensor_name": "late_readings_sensor"})
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        production_topology(dagster_home, env) as topology,
    ):
        deadline = time.monotonic() + RUN_TIMEOUT
        while not instance.get_runs(filters=launched):
            assert time.monotonic() < deadline, f"no late-readings run\n{topology.logs()}"
            time.sleep(1)
        [run] = instance.get_runs(filters=launched)
        assert run.tags["dagster/partition"] == day.isoformat()
        assert topology.wait_for_run(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS

    assert stripe_value(
        billing.stripe_billing, "temperature_readings", customer, *whole_day
    ) == readings_in(billing.engine, 1, *whole_day)


@pytest.mark.processes
@pytest.mark.timeout(480)
def test_the_daemon_reruns_a_billing_run_failed_by_a_stripe_outage(
    billing: Billing, dagster_home: Path, dagster_pg_url: str
) -> None:
    """Stripe answers every call with a 500 (and `Stripe-Should-Retry: false`, so each attempt
    fails at once) until the reporting step has spent all its retries and the run fails. Once
    Stripe is back, nobody relaunches anything: the daemon's run retries (docs/dagster.production
    .yaml, the `daily_billing` job tags) re-run it, and Stripe ends up holding the source's
    totals, computed here from the seeded rows. The alert sink hears nothing: the failure the
    daemon healed by itself was never the last attempt."""
    day = datetime.now(UTC).date() - timedelta(days=1)
    customer = new_customer(billing.stripe_billing, "Org 1")
    add_organization(billing.engine, 1, customer=customer)
    add_sensor(billing.engine, 1, 1, midnight(day) - timedelta(days=3))
    add_readings(billing.engine, 1, day, 7)
    expected = {("active_sensors", customer): 1, ("temperature_readings", customer): 7}
    billing.emulator.set_faults(error_500_rate=1.0, should_retry=False)
    with (
        RecordingSink() as sink,
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        production_topology(
            dagster_home,
            topology_env(
                billing.database_url,
                dagster_home,
                dagster_pg_url,
                billing.api_base,
                **{config.ALERTS_WEBHOOK_URL: sink.url("/webhook")},
            ),
        ) as topology,
    ):
        answer = topology.launch("daily_billing", {"dagster/partition": day.isoformat()})
        assert answer["__typename"] == "LaunchRunSuccess", answer
        first_id = answer["run"]["runId"]
        deadline = time.monotonic() + 300
        while (first := instance.get_run_by_id(first_id)) is None or not first.is_finished:
            assert time.monotonic() < deadline, f"the first run never ended\n{topology.logs()}"
            time.sleep(1)
        assert first.status == dg.DagsterRunStatus.FAILURE
        assert billing.emulator.meter_events() == []
        billing.emulator.set_faults()  # Stripe is back; no one relaunches anything

        retried: Sequence[dg.DagsterRun] = []
        while not retried:
            assert time.monotonic() < deadline, f"the daemon never re-ran it\n{topology.logs()}"
            retried = instance.get_runs(
                filters=dg.RunsFilter(tags={"dagster/parent_run_id": first_id})
            )
            time.sleep(1)
        rerun = topology.wait_for_run(instance, retried[0].run_id)

        assert rerun.status == dg.DagsterRunStatus.SUCCESS, topology.logs()
        assert rerun.tags["dagster/retry_number"] == "1"
        failed = instance.get_run_by_id(first_id)
        assert failed is not None and failed.tags["dagster/will_retry"] == "true"
        time.sleep(30)  # more than one tick of the run failure sensor after the failure
    assert sink.received == []  # no alert for a failure the daemon re-ran and healed
    sent = {(e["event_name"], e["customer"]): e["value"] for e in billing.emulator.meter_events()}
    assert sent == expected
