"""Dagster side of the webhooks: the inbox sensor, the processing job, the dead-letter check.

The job materializes `stripe_subscriptions` (the `subscriptions` rows kept in step with Stripe),
so every batch shows in the asset's history with its counts, and the dead-letter check on that
asset turns red while any event is dead-lettered, listing their ids.

The `postgres` resource is not bound here: billing_pipeline/definitions.py provides it once for
the whole code location (Definitions.merge refuses two different resources under one key).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import dagster as dg

from billing_pipeline.resources import PostgresResource
from billing_pipeline.webhooks import inbox
from billing_pipeline.webhooks.meter_errors import fetcher_from_env
from billing_pipeline.webhooks.processing import MAX_ATTEMPTS, process_open_events

SENSOR_INTERVAL_SECONDS = 30
# Failed events are retried by a sweep run at most this often, so MAX_ATTEMPTS spans about
# twenty minutes: time for a missing organization or checkout to appear before dead-lettering.
RETRY_DELAY_SECONDS = 300
# A pending row this old at or below the cursor was missed by its batch run.
STALE_PENDING_SECONDS = 120
GROUP = "stripe_webhooks"


@dg.asset(
    group_name=GROUP,
    kinds={"postgres", "stripe"},
    description=(
        "The `subscriptions` rows kept in step with Stripe webhooks: each materialization "
        "applies every open inbox event, oldest first by Stripe's `created`, and records how "
        "many were processed, ignored, failed (to be retried) and dead-lettered. Stripe's thin "
        "meter-error events are applied here too: their full body is fetched from Stripe "
        "(needs STRIPE_SECRET_KEY) and the ledger rows they name are marked failed."
    ),
)
def stripe_subscriptions(postgres: PostgresResource) -> dg.MaterializeResult:
    result = process_open_events(postgres.engine(), fetch_event=fetcher_from_env())
    return dg.MaterializeResult(
        metadata={
            "processed": len(result.processed),
            "ignored": len(result.ignored),
            "failed": len(result.failed),
            "dead_lettered": len(result.dead_lettered),
            "skipped_held_elsewhere": result.skipped,
            "failed_event_ids": dg.MetadataValue.json(result.failed),
            "dead_lettered_event_ids": dg.MetadataValue.json(result.dead_lettered),
        }
    )


@dg.asset_check(
    asset=stripe_subscriptions,
    description=(
        f"Fails while any Stripe event is dead-lettered (its handler failed {MAX_ATTEMPTS} times); "
        "lists the event ids and errors. Fix the cause, then `billing-pipeline webhooks requeue "
        "EVENT_ID` gives the event fresh attempts."
    ),
)
def stripe_webhook_dead_letters(postgres: PostgresResource) -> dg.AssetCheckResult:
    total, letters = inbox.dead_letters(postgres.engine())
    rows = "\n".join(
        f"| `{letter.event_id}` | {letter.event_type} | {letter.attempts} | "
        f"{(letter.last_error or '').replace('|', '/').replace(chr(10), ' ')[:200]} |"
        for letter in letters
    )
    return dg.AssetCheckResult(
        passed=total == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "dead_lettered": total,
            "event_ids": dg.MetadataValue.json([letter.event_id for letter in letters]),
            "events": dg.MetadataValue.md(
                "| event | type | attempts | last error |\n|---|---|---|---|\n" + rows
            ),
        },
    )


process_stripe_webhooks = dg.define_asset_job(
    "process_stripe_webhooks",
    selection=dg.AssetSelection.assets(stripe_subscriptions),
    description=(
        "Apply open Stripe webhook events from billing.webhook_inbox to the subscriptions table "
        "and check for dead letters. Launched by stripe_webhook_inbox_sensor; safe to run by "
        "hand or concurrently (events are claimed with SKIP LOCKED and applied once)."
    ),
)


@dataclass(frozen=True)
class InboxCursor:
    """The sensor's memory: the newest inbox id already handed to a run, and when the next
    retry sweep is allowed."""

    last_id: int = 0
    next_sweep_at: float = 0.0

    @classmethod
    def parse(cls, raw: str | None) -> InboxCursor:
        return cls(**json.loads(raw)) if raw else cls()

    def serialize(self) -> str:
        return json.dumps(asdict(self))


@dg.sensor(
    job=process_stripe_webhooks,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches billing.webhook_inbox. New rows past the cursor (the last inbox id handed to a "
        "run) launch one run keyed `inbox-FIRST-LAST`; failed events, and pending ones a run "
        f"missed, launch a `retry-…` run at most every {RETRY_DELAY_SECONDS} s."
    ),
)
def stripe_webhook_inbox_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult:
    cursor = InboxCursor.parse(context.cursor)
    engine = postgres.engine()
    if new := inbox.new_events_since(engine, cursor.last_id):
        request = dg.RunRequest(
            run_key=f"inbox-{new.first_id}-{new.last_id}",
            tags={
                "stripe_webhooks/first_inbox_id": str(new.first_id),
                "stripe_webhooks/last_inbox_id": str(new.last_id),
            },
        )
        return dg.SensorResult(
            run_requests=[request], cursor=replace(cursor, last_id=new.last_id).serialize()
        )
    now = time.time()
    if now >= cursor.next_sweep_at:
        stale_before = datetime.fromtimestamp(now - STALE_PENDING_SECONDS, tz=UTC)
        if leftovers := inbox.leftover_count(engine, cursor.last_id, stale_before):
            request = dg.RunRequest(
                run_key=f"retry-{cursor.last_id}-{int(now)}",
                tags={"stripe_webhooks/leftover_events": str(leftovers)},
            )
            swept = replace(cursor, next_sweep_at=now + RETRY_DELAY_SECONDS)
            return dg.SensorResult(run_requests=[request], cursor=swept.serialize())
    return dg.SensorResult(
        skip_reason=dg.SkipReason(f"no new webhook events after inbox id {cursor.last_id}")
    )


webhook_defs = dg.Definitions(
    assets=[stripe_subscriptions],
    asset_checks=[stripe_webhook_dead_letters],
    jobs=[process_stripe_webhooks],
    sensors=[stripe_webhook_inbox_sensor],
)
