"""A real range backfill: launched on a Dagster instance and driven by the backfill daemon's loop.

The code location is the project's `Definitions`, with its resources bound to the test database
and the emulator and the in-process executor; runs are launched synchronously so one daemon
iteration executes them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._record import copy
from dagster._time import get_current_timestamp
from sqlalchemy import text

from billing_pipeline.definitions import defs
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.usage.meters import ACTIVE_SENSORS, METERS, TEMPERATURE_READINGS
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import Billing, daemon_workspace
from billing_pipeline_tests.support.stripe import new_customer

TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in range(35, 0, -1)]  # 35 days, ending yesterday
# sensor: (organization, index of the day it is created, index of the day it is switched off)
SENSORS: dict[int, tuple[int, int, int | None]] = {
    11: (1, 1, None),
    12: (1, 1, 15),
    21: (2, 5, None),
    31: (3, 0, None),  # free tier: nothing sent, so the oldest day holds no Stripe event
}
# Paying sensors start on day 1: day 0 is 35 days old and may already be outside Stripe's
# window (by the hour of the day the test runs), which would make the totals depend on the clock.
ASSETS = [
    dg.AssetKey(["usage", ACTIVE_SENSORS.name]),
    dg.AssetKey(["usage", TEMPERATURE_READINGS.name]),
    dg.AssetKey(["stripe", "meter_events"]),
]


def readings(sensor: int, index: int) -> int:
    return (index * 7 + sensor) % 5


def expected_by_day(organization: int) -> dict[str, list[float]]:
    """Day-by-day values written out from SENSORS, independently of the meters' SQL."""
    active = [0.0] * len(DAYS)
    counted = [0.0] * len(DAYS)
    for sensor, (org, created, off) in SENSORS.items():
        if org != organization:
            continue
        for index in range(created, len(DAYS)):
            counted[index] += readings(sensor, index) if off is None or index <= off else 0
            active[index] += 1 if off is None or index < off else 0
    return {ACTIVE_SENSORS.name: active, TEMPERATURE_READINGS.name: counted}


@pytest.fixture
def workspace(
    synchronous_instance: dg.DagsterInstance, billing: Billing
) -> Iterator[WorkspaceProcessContext]:
    """The project's definitions with the test's resources and the in-process executor."""
    definitions = copy(
        defs,
        resources={**(defs.resources or {}), **billing.resources()},
        executor=dg.in_process_executor,
    )
    with daemon_workspace(synchronous_instance, definitions) as context:
        yield context


def run_backfill(workspace: WorkspaceProcessContext) -> list[dg.DagsterRun]:
    """Request a backfill of DAYS as the UI does, let the daemon run it; return its runs."""
    instance = workspace.instance
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=f"range{len(instance.get_backfills())}",
        asset_graph=workspace.create_request_context().asset_graph,
        partition_names=[day.isoformat() for day in DAYS],
        asset_selection=ASSETS,
        backfill_timestamp=get_current_timestamp(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    logger = logging.getLogger("test_backfills")
    for _ in range(4):
        list(execute_backfill_iteration(workspace, logger))
        status = instance.get_backfill(backfill.backfill_id)
        if status and status.status is not BulkActionStatus.REQUESTED:
            break
    final = instance.get_backfill(backfill.backfill_id)
    assert final is not None and final.status is BulkActionStatus.COMPLETED_SUCCESS
    return list(instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill.backfill_id)))


def stripe_by_day(stripe_billing: StripeBilling, customer: str) -> dict[str, list[float]]:
    remote = {m.event_name: m.id for m in stripe_billing.list_meters()}
    summaries = stripe_billing.client.v1.billing.meters.event_summaries
    return {
        meter.name: [
            float(s.aggregated_value)
            for s in summaries.list(
                remote[meter.event_name],
                {
                    "customer": customer,
                    "start_time": int(midnight(DAYS[0]).timestamp()),
                    "end_time": int(midnight(TODAY).timestamp()),
                    "value_grouping_window": "day",
                    "limit": 100,
                },
            ).data
        ]
        for meter in METERS
    }


def test_a_35_day_backfill_is_one_run_bills_day_by_day_totals_and_reruns_send_nothing(
    billing: Billing, workspace: WorkspaceProcessContext
) -> None:
    engine, emulator, stripe_billing = billing.engine, billing.emulator, billing.stripe_billing
    customers = {1: new_customer(stripe_billing, "Alpha"), 2: new_customer(stripe_billing, "Beta")}
    for org in (1, 2, 3):
        add_organization(engine, org, customer=customers.get(org))
    for sensor, (org, created, off) in SENSORS.items():
        add_sensor(
            engine,
            sensor,
            org,
            midnight(DAYS[created]),
            midnight(DAYS[off]) + timedelta(hours=3) if off is not None else None,
        )
        for index in range(created, len(DAYS) if off is None else off + 1):
            if count := readings(sensor, index):
                add_readings(engine, sensor, DAYS[index], count)

    [run] = run_backfill(workspace)

    # One run for the whole range (single-run backfill policy), over every selected asset.
    assert run.status is dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/asset_partition_range_start"] == DAYS[0].isoformat()
    assert run.tags["dagster/asset_partition_range_end"] == DAYS[-1].isoformat()
    for org, customer in customers.items():
        assert stripe_by_day(stripe_billing, customer) == expected_by_day(org)
    sent = emulator.meter_events()
    assert len(sent) == sum(
        1 for org in customers for values in expected_by_day(org).values() for v in values if v
    )

    [again] = run_backfill(workspace)

    # The same range again: one more run, no new event, no new ledger row.
    assert again.status is dg.DagsterRunStatus.SUCCESS
    assert emulator.meter_events() == sent
    with engine.connect() as connection:
        statuses: dict[str, int] = dict(
            connection.execute(
                text("SELECT status, count(*) FROM billing.meter_ledger GROUP BY status")
            ).all()
        )
    # The free organization's usage is never in the ledger (the unbilled_usage check lists it).
    assert statuses == {"sent": len(sent)}
