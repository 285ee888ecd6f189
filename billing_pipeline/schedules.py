"""The daily schedule: at 02:00 UTC, bill the day that just ended."""

from __future__ import annotations

import dagster as dg

from billing_pipeline.jobs import daily_billing_job

daily_billing_schedule = dg.build_schedule_from_partitioned_job(
    daily_billing_job,
    hour_of_day=2,
    description="Every day at 02:00 UTC, compute and report the previous UTC day.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
