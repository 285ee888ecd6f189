"""The reporting flow's sensors: late readings, billing periods that just ended
(period_close.py), and draft invoices to verify before Stripe finalizes them
(draft_invoices.py).

Late readings: notice days whose readings arrived after the day was billed, and rebill them.

Readings can be ingested days after they were recorded (a gateway comes back online). A day's
usage is a pure function of its rows, so the fix is to re-materialize that day's partition of
`daily_billing`: the usage is recomputed and the ledger sends only the difference (a correction
revision for `sum`, the new value for `last`). Days outside Stripe's 35-day window are requested
too: their run records the correction as `expired` with the reason, so it is shown, not lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from sqlalchemy import Engine, text

from billing_pipeline.resources import PostgresResource
from billing_pipeline.stripe_reporting.draft_invoices import (
    ATTEMPT_TAG,
    DRAFT_TAG,
    latest_verifications,
    next_attempt,
    open_drafts,
)
from billing_pipeline.stripe_reporting.identifiers import day_start, event_timestamp
from billing_pipeline.stripe_reporting.jobs import (
    daily_billing_job,
    draft_invoice_verification_job,
    partition_range_tags,
)
from billing_pipeline.stripe_reporting.ledger import STRIPE_WINDOW
from billing_pipeline.stripe_reporting.period_close import (
    PERIOD_CLOSE_TAG,
    ClosingBoundary,
    closing_boundaries,
)
from billing_pipeline.usage.assets import usage_asset_key
from billing_pipeline.usage.meters import METERS

# `ingested_at` is the ingest transaction's start time, so a reading can become visible after a
# newer cursor or after a computation that began later. Rescanning this far behind the cursor and
# counting readings this close before a computation as possibly missed closes that gap; the cost
# is at most one extra re-materialization, which sends nothing when nothing changed.
INGEST_SETTLE = timedelta(minutes=5)
# Without a cursor (first start), look back as far as Stripe still takes corrections.
FIRST_LOOKBACK = timedelta(days=35)
LATE_READINGS_TAG = "billing/late_readings_ingested_until"

_LATE_DAYS_SQL = """
WITH arrived AS (
    SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, max(ingested_at) AS newest_ingested
    FROM temperature_readings
    WHERE ingested_at > :since
    GROUP BY 1
)
SELECT a.day, a.newest_ingested, u.computed_at
FROM arrived a
LEFT JOIN LATERAL (
    SELECT max(computed_at) AS computed_at
    FROM billing.daily_usage
    WHERE meter = ANY(:meters) AND day = a.day
) u ON true
ORDER BY a.day
"""


@dataclass(frozen=True)
class LateDay:
    """A billed day that received readings after its usage was last computed."""

    day: date
    newest_ingested: datetime
    computed_at: datetime

    @property
    def run_key(self) -> str:
        # The day and the newest reading that made it late: the daemon skips a key it has seen,
        # so repeated ticks do not queue the same correction twice, while newer late readings
        # for the same day get a run of their own.
        return f"late-readings-{self.day.isoformat()}-{self.newest_ingested.isoformat()}"

    def outside_stripe_window(self, now: datetime) -> bool:
        # The same test the ledger applies to a correction's event timestamp.
        start = day_start(self.day)
        return event_timestamp(start, start + timedelta(days=1), now) < now - STRIPE_WINDOW


def find_late_days(engine: Engine, since: datetime) -> tuple[list[LateDay], datetime | None]:
    """Days with readings ingested after `since` and after the day was computed.

    Returns them with the newest `ingested_at` seen (the next cursor; None when nothing
    arrived). Days never computed are left to the schedule or a backfill: their first run
    counts every reading anyway. So are days computed only before they ended (today, by a
    period-close run, partitions.py): the daily run computes them once they are complete.
    """
    with engine.connect() as connection:
        rows = connection.execute(
            text(_LATE_DAYS_SQL), {"since": since, "meters": [m.name for m in METERS]}
        ).all()
    newest = max((row.newest_ingested for row in rows), default=None)
    late = [
        LateDay(row.day, row.newest_ingested, row.computed_at)
        for row in rows
        if row.computed_at is not None
        and row.computed_at >= day_start(row.day + timedelta(days=1))
        and row.newest_ingested > row.computed_at - INGEST_SETTLE
    ]
    return late, newest


def _since(cursor: str | None, now: datetime) -> datetime:
    if cursor is None:
        return now - FIRST_LOOKBACK
    return datetime.fromisoformat(cursor) - INGEST_SETTLE


@dg.sensor(
    job=daily_billing_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches `temperature_readings.ingested_at` for readings that arrived after their UTC "
        "day's usage was computed (`billing.daily_usage.computed_at`) and re-materializes that "
        "day of `daily_billing`, so Stripe receives only the difference as a new revision. "
        "Days outside Stripe's 35-day window are re-run too and recorded as `expired`. "
        "Cursor: the newest `ingested_at` seen."
    ),
)
def late_readings_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult:
    now = datetime.now(UTC)
    late, newest = find_late_days(postgres.engine(), _since(context.cursor, now))
    cursor = newest.isoformat() if newest else context.cursor
    if not late:
        return dg.SensorResult(
            skip_reason="no readings arrived late for a computed day", cursor=cursor
        )
    for day in late:
        if day.outside_stripe_window(now):
            context.log.warning(
                f"{day.day}: late readings, but the day is outside Stripe's 35-day window; "
                "the run records the correction as expired"
            )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=day.run_key,
                partition_key=day.day.isoformat(),
                tags={LATE_READINGS_TAG: day.newest_ingested.isoformat()},
            )
            for day in late
        ],
        cursor=cursor,
    )


def _computed_complete(instance: dg.DagsterInstance, day: date) -> bool:
    """Whether every meter's usage of `day` was computed by a run that started after the day
    ended (a period-close run during the day computes only part of it)."""
    day_end = day_start(day + timedelta(days=1)).timestamp()
    for meter in METERS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=usage_asset_key(meter), asset_partitions=[str(day)]),
            limit=1,
        ).records
        run = instance.get_run_record_by_id(records[0].run_id) if records else None
        if run is None or run.start_time is None or run.start_time < day_end:
            return False
    return True


def closing_run(boundary: ClosingBoundary, day_before_needed: bool) -> dg.RunRequest:
    """One run of `daily_billing` over the boundary's last day, and the day before if needed."""
    first_day = boundary.last_day - timedelta(days=1 if day_before_needed else 0)
    return dg.RunRequest(
        run_key=boundary.run_key,
        tags={
            **partition_range_tags(first_day, boundary.last_day),
            PERIOD_CLOSE_TAG: boundary.at.isoformat(),
        },
    )


@dg.sensor(
    job=daily_billing_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reports the closing part of every billing period as soon as the period ends, well "
        "inside Stripe's invoice finalization grace period (1 h by default): for each instant "
        "at which periods in `billing.billing_periods` (from subscription events and "
        "`invoice.created`) or subscriptions ended, one run of `daily_billing` over the day "
        "holding that instant (today's partial day for a mid-day end) and the day before when "
        "it was never computed complete, which cuts the day at the boundary and reports the "
        "parts that have ended. Run key: the instant."
    ),
)
def period_close_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult:
    boundaries = closing_boundaries(postgres.engine(), datetime.now(UTC))
    if not boundaries:
        return dg.SensorResult(skip_reason="no billing period ended in the last 72 hours")
    days_before = {b.last_day - timedelta(days=1) for b in boundaries}
    incomplete = {day for day in days_before if not _computed_complete(context.instance, day)}
    return dg.SensorResult(
        run_requests=[
            closing_run(b, b.last_day - timedelta(days=1) in incomplete) for b in boundaries
        ]
    )


@dg.sensor(
    job=draft_invoice_verification_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "For each draft invoice of a subscription that Stripe has not finalized yet (from "
        "`invoice.created`), launches `verify_draft_invoice` over the draft's period: at once "
        "(first look), again when a run failed before its check compared, and once more when "
        "the draft is within 15 minutes of finalization (last look). Each run recomputes the "
        "period's usage, sends what is owed, and its check `draft_invoices_verified` compares "
        "every metered line with the source. Run key: draft-<invoice>-<attempt>."
    ),
)
def draft_invoice_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult:
    engine = postgres.engine()
    now = datetime.now(UTC)
    drafts = open_drafts(engine, finalizing_after=now)
    if not drafts:
        return dg.SensorResult(skip_reason="no draft invoice waits for finalization")
    latest = latest_verifications(engine, [d.invoice for d in drafts])
    requests = []
    for draft in drafts:
        runs = context.instance.get_runs(filters=dg.RunsFilter(tags={DRAFT_TAG: draft.invoice}))
        attempt = next_attempt(
            draft,
            launched=len(runs),
            finished=sum(1 for run in runs if run.is_finished),
            latest=latest.get(draft.invoice),
            now=now,
        )
        if attempt is None:
            continue
        # Stripe's window bounds what a run can still send; the partitions, what it can compute.
        first_day = max(draft.first_day, (now - STRIPE_WINDOW).date())
        requests.append(
            dg.RunRequest(
                run_key=draft.run_key(attempt),
                tags={
                    **partition_range_tags(first_day, draft.last_day),
                    DRAFT_TAG: draft.invoice,
                    ATTEMPT_TAG: str(attempt),
                },
            )
        )
    if not requests:
        return dg.SensorResult(skip_reason="every draft was looked at; the next look is later")
    return dg.SensorResult(run_requests=requests)
