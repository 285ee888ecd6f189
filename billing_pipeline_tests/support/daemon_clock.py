"""Driving the real `dagster-daemon` under a moved clock: its environment, schedules a test does
not exercise, and waiting for the runs it launches (see test_billing_month_on_the_daemon.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from sqlalchemy import Engine, text

from billing_pipeline import config
from billing_pipeline.db.statuses import OPEN_INBOX_STATUSES
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.faketime import FakeClock
from billing_pipeline_tests.support.processes import LOCATION, Topology
from billing_pipeline_tests.support.stripe import TEST_KEY

WAIT = 240.0
# Schedules these tests do not exercise: each clock jump would launch their catch-up runs.
IDLE_SCHEDULES = (
    "billing_status_schedule",
    "stripe_event_recovery_schedule",
    "stripe_reconciliation_schedule",
)


def daemon_env(
    billing: Billing, emulator_url: str, dagster_home: Path, dagster_pg_url: str, clock: FakeClock
) -> dict[str, str]:
    """The environment of the code server, daemon and webserver: the test's database, Dagster
    instance and emulator, on `clock`."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DAGSTER_"))},
        config.DATABASE_URL: billing.database_url,
        config.DAGSTER_HOME: str(dagster_home),
        config.DAGSTER_PG_URL: dagster_pg_url,
        config.STRIPE_SECRET_KEY: TEST_KEY,
        config.STRIPE_API_BASE: emulator_url,
        **clock.env(),
        # A run's start is a gRPC call to the code server (60 s by default); on two busy cores
        # under libfaketime it has once taken longer, which failed the run, not the billing.
        "DAGSTER_GRPC_TIMEOUT_SECONDS": "180",
    }


def stop_idle(
    instance: dg.DagsterInstance,
    workspace: Path,
    schedules: Sequence[str] = IDLE_SCHEDULES,
    sensors: Sequence[str] = (),
) -> None:
    """What `dagster schedule stop` and `dagster sensor stop` do, for each one named."""
    with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(workspace)])) as context:
        location = context.create_request_context().get_code_location(LOCATION)
        repository = location.get_repository("__repository__")
        for name in schedules:
            schedule = repository.get_schedule(name)
            instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)
        for name in sensors:
            sensor = repository.get_sensor(name)
            instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)


def wait_for(what: str, done: Callable[[], bool], topology: Topology) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT} s\n{topology.logs()}")
        time.sleep(1)


def finished_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> Callable[[], bool]:
    def finished() -> bool:
        runs = instance.get_runs(filters=dg.RunsFilter(tags=tags))
        return bool(runs) and all(run.is_finished for run in runs)

    return finished


def quiet(instance: dg.DagsterInstance) -> bool:
    """No run queued or in progress: the clock may move without cutting one short."""
    return all(run.is_finished for run in instance.get_runs())


def settled(instance: dg.DagsterInstance, engine: Engine) -> bool:
    """Quiet, and no webhook event waiting for the processing run the inbox sensor is about to
    launch (a run created just before a clock jump fails as "taking longer than 300 seconds to
    start")."""
    with engine.connect() as connection:
        waiting = connection.execute(
            text("SELECT count(*) FROM billing.webhook_inbox WHERE status = ANY(:open)"),
            {"open": list(OPEN_INBOX_STATUSES)},
        ).scalar_one()
    return waiting == 0 and quiet(instance)


def linked_subscriptions(engine: Engine) -> int:
    """Subscriptions the webhook flow linked to Stripe and saw active."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM subscriptions "
                    "WHERE stripe_subscription_id IS NOT NULL AND status = 'active'"
                )
            ).scalar_one()
        )
