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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import Engine

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline_tests.support.billing_month import readings_in
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.processes import (
    LOCATION,
    Topology,
    pipeline_env,
    production_topology,
)
from billing_pipeline_tests.support.reporting import stripe_value
from billing_pipeline_tests.support.stripe import new_customer
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

RUN_TIMEOUT = 120.0
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def wait_for_run(instance: dg.DagsterInstance, run_id: str, topology: Topology) -> dg.DagsterRun:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish in time\n{topology.logs()}")


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

    env = pipeline_env(database_url, dagster_home, dagster_pg_url, emulator_server.url)
    # Creating the instance here also creates Dagster's tables before three processes race to.
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        production_topology(dagster_home, env) as topology,
    ):
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        answer = topology.graphql(
            LAUNCH,
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": "__repository__",
                        "jobName": "daily_billing",
                    },
                    "executionMetadata": {
                        "tags": [{"key": "dagster/partition", "value": day.isoformat()}]
                    },
                }
            },
        )["data"]["launchRun"]
        assert answer["__typename"] == "LaunchRunSuccess", answer
        assert answer["run"]["status"] == "QUEUED"  # the daemon, not the webserver, starts it
        run = wait_for_run(instance, answer["run"]["runId"], topology)

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

    env = pipeline_env(billing.database_url, dagster_home, dagster_pg_url, billing.api_base)
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
        assert wait_for_run(instance, run.run_id, topology).status == dg.DagsterRunStatus.SUCCESS

    assert stripe_value(
        billing.stripe_billing, "temperature_readings", customer, *whole_day
    ) == readings_in(billing.engine, 1, *whole_day)
