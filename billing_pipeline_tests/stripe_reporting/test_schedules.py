"""The schedules: the daily run bills the day that just ended at 02:00 UTC; billing/status
refreshes every 30 minutes."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from billing_pipeline.definitions import defs


def test_the_0200_tick_requests_the_previous_utc_day() -> None:
    daily_billing_schedule = defs.resolve_schedule_def("daily_billing_schedule")
    assert daily_billing_schedule.cron_schedule == "0 2 * * *"
    assert daily_billing_schedule.execution_timezone == "UTC"
    assert daily_billing_schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 1, 2, 0, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    requests = list(daily_billing_schedule.evaluate_tick(context).run_requests or [])

    # Not the newest partition: that is today, still in progress (partitions.py).
    assert [r.partition_key for r in requests] == ["2026-02-28"]


def test_the_schedule_targets_every_meter_and_the_reporting_asset() -> None:
    job = defs.resolve_job_def("daily_billing")
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert keys == {"usage/active_sensors", "usage/temperature_readings", "stripe/meter_events"}


def test_billing_status_refreshes_every_30_minutes_without_being_switched_on() -> None:
    """The README promises billing/status (and the bill so far) every 30 minutes: the schedule
    is on by default."""
    schedule = defs.resolve_schedule_def("billing_status_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "*/30 * * * *"
    assert schedule.execution_timezone == "UTC"
    job = defs.resolve_job_def(schedule.job_name)
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert keys == {"billing/status", "billing/bill_so_far"}
