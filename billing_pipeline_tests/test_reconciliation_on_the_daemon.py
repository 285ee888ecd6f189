"""`stripe_reconciliation_schedule` as production runs it: the real `dagster-daemon` launches the
`stripe_reconciliation` job at 05:00 UTC, on a clock the test moves (support/faketime.py).

The day was billed before (the 02:00 run, in process here); then another integration overwrote a
customer's day in Stripe. At 05:00 the daemon launches the reconciliation run over Stripe's
35-day window, which reads the environment's budget, makes one summaries read per (meter,
customer) and records the drift against the day it happened.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from billing_pipeline import config
from billing_pipeline.stripe_reporting.reconciliation_check import stripe_reconciliation
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.daemon_clock import stop_idle
from billing_pipeline_tests.support.dagster_runs import Billing, day_evaluations
from billing_pipeline_tests.support.faketime import FakeClock
from billing_pipeline_tests.support.processes import production_topology, topology_env
from billing_pipeline_tests.support.stripe import new_customer

WAIT = 180.0
SCHEDULE = "stripe_reconciliation_schedule"


@pytest.mark.processes
@pytest.mark.timeout(420)
def test_the_daemon_launches_the_reconciliation_job_at_five(
    billing: Billing, dagster_home: Path, dagster_pg_url: str, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date()
    day = today - timedelta(days=1)
    customer = new_customer(billing.stripe_billing, "Org 1")
    add_organization(billing.engine, 1, customer=customer)
    add_sensor(billing.engine, 1, 1, midnight(day) - timedelta(days=3))
    add_readings(billing.engine, 1, day, 6)
    assert billing.materialize_day(day).success  # what the 02:00 run did
    billing.stripe_billing.client.v1.billing.meter_events.create(
        {
            "event_name": "temperature_readings",
            "timestamp": int((midnight(day) + timedelta(hours=23, minutes=30)).timestamp()),
            "payload": {"stripe_customer_id": customer, "value": "2"},
        }
    )
    reads_before = billing.emulator.endpoint_counts().get("list_event_summaries", 0)

    clock = FakeClock(tmp_path / "faketime", billing.emulator)
    clock.move_to(midnight(today) + timedelta(hours=4, minutes=55))
    env = topology_env(
        billing.database_url,
        dagster_home,
        dagster_pg_url,
        billing.api_base,
        **{config.RECONCILIATION_DAILY_CALLS: "5", **clock.env()},
        # A run's start is a gRPC call to the code server; under libfaketime on busy cores it
        # can take longer than the default 60 s.
        DAGSTER_GRPC_TIMEOUT_SECONDS="180",
    )
    launched = dg.RunsFilter(tags={"dagster/schedule_name": SCHEDULE})
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        production_topology(dagster_home, env) as topology,
    ):
        # billing/status (on by default, every 30 minutes) reads Stripe's summaries too: its
        # reads are not the reconciliation's, so its 05:00 tick stays out of the count.
        stop_idle(instance, dagster_home / "workspace.yaml", schedules=("billing_status_schedule",))
        # The daemon has taken up the schedule (its state starts at the daemon's first
        # evaluation: a tick before that would never fire), then the clock passes 05:00.
        deadline = time.monotonic() + WAIT
        while SCHEDULE not in {s.instigator_name for s in instance.all_instigator_state()}:
            assert time.monotonic() < deadline, f"schedule not evaluated\n{topology.logs()}"
            time.sleep(1)
        clock.move_to(midnight(today) + timedelta(hours=5, seconds=20))
        while not (runs := instance.get_runs(filters=launched)) or not runs[0].is_finished:
            assert time.monotonic() < deadline + WAIT, f"no reconciliation run\n{topology.logs()}"
            time.sleep(1)
        [run] = runs
        assert run.status == dg.DagsterRunStatus.SUCCESS, topology.logs()
        evaluations = day_evaluations(instance, stripe_reconciliation.check_key, run.run_id)

    assert run.job_name == "stripe_reconciliation"
    assert run.tags["dagster/asset_partition_range_end"] == day.isoformat()
    assert run.tags["dagster/asset_partition_range_start"] == str(day - timedelta(days=34))
    evaluation = evaluations[day]
    assert not evaluation.passed
    details = str(evaluation.metadata["drift_details"].value)
    assert f"| temperature_readings | {day} | {customer} | 1 | 6 | 6 | 2.0 |" in details
    # One read per (meter, customer) for the whole window, within the environment's budget.
    assert evaluation.metadata["call_budget_per_day"].value == 5
    assert evaluation.metadata["calls_made"].value == 2
    assert billing.emulator.endpoint_counts().get("list_event_summaries", 0) - reads_before == 2
    # Every other day of the window passed: the drift is recorded against its own day only.
    assert all(e.passed for d, e in evaluations.items() if d != day)
