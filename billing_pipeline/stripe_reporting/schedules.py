"""Schedules: bill the day that just ended at 02:00 UTC; recompute the trailing 35 days at
03:00 UTC; reconcile Stripe's 35-day window at 05:00 UTC, in its own job."""

from __future__ import annotations

from datetime import UTC, date, timedelta

import dagster as dg

from billing_pipeline.stripe_reporting.jobs import (
    daily_billing_job,
    partition_range_tags,
    reconciliation_job,
)

DAILY_BILLING_HOUR = 2
# Stripe's meter event window: every day a comparison could still correct, and at least the
# rotation's days (STRIPE_RECONCILIATION_ROTATION_DAYS, 28 by default), so a pair compared once
# in that many days has every day since its last comparison compared.
RECONCILED_DAYS = 35
RECONCILIATION_HOUR = 5
RECOMPUTED_DAYS = 35
RECOMPUTE_HOUR = 3


def _yesterday(context: dg.ScheduleEvaluationContext) -> date:
    return context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)


# Not `build_schedule_from_partitioned_job`: it targets the newest partition, which is today
# (partitions.py), while the daily run bills the day that has just ended.
@dg.schedule(
    name="daily_billing_schedule",
    job=daily_billing_job,
    cron_schedule=f"0 {DAILY_BILLING_HOUR} * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        f"Every day at {DAILY_BILLING_HOUR:02d}:00 UTC, compute and report the previous UTC day."
    ),
)
def daily_billing_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = _yesterday(context).isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)


def _range_request(context: dg.ScheduleEvaluationContext, days: int, prefix: str) -> dg.RunRequest:
    """One run over the `days` complete days before the tick (single-run backfill policy)."""
    last_day = _yesterday(context)
    first_day = last_day - timedelta(days=days - 1)
    return dg.RunRequest(
        run_key=f"{prefix}-{last_day}", tags=partition_range_tags(first_day, last_day)
    )


@dg.schedule(
    name="trailing_recompute_schedule",
    job=daily_billing_job,
    cron_schedule=f"0 {RECOMPUTE_HOUR} * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        f"Every day at {RECOMPUTE_HOUR:02d}:00 UTC, recompute the usage of the last "
        f"{RECOMPUTED_DAYS} complete days in one run and report it: source rows written with a "
        "back-dated time (a sensor created or deactivated in the past) change a gauge without "
        "any late reading to notice, and only differences go out to Stripe."
    ),
)
def trailing_recompute_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return _range_request(context, RECOMPUTED_DAYS, "recompute")


@dg.schedule(
    name="stripe_reconciliation_schedule",
    job=reconciliation_job,
    cron_schedule=f"0 {RECONCILIATION_HOUR} * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        f"Every day at {RECONCILIATION_HOUR:02d}:00 UTC, reconcile the last {RECONCILED_DAYS} "
        "complete days with Stripe in its own run (the billing run never waits for it), after "
        "the 02:00 billing run and the 03:00 recompute have settled, within the daily budget of "
        "Stripe reads, and refresh the ledger attention checks."
    ),
)
def reconciliation_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return _range_request(context, RECONCILED_DAYS, "reconcile")
