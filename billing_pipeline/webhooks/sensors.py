"""The inbox sensor: launches the processing job for new events and when retries fall due, and
records each batch the receiver stored as a materialization of `stripe_webhook_inbox`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace

import dagster as dg

from billing_pipeline.resources import PostgresResource
from billing_pipeline.webhooks import inbox
from billing_pipeline.webhooks.assets import stripe_webhook_inbox
from billing_pipeline.webhooks.jobs import process_stripe_webhooks

SENSOR_INTERVAL_SECONDS = 30
# Each failed event carries its own `next_attempt_at` (see processing.py); the sensor launches a
# retry run once one is due, and at most this often, so a retry comes at most a minute late.
RETRY_POLL_SECONDS = 60
# A pending row this old at or below the cursor was missed by its batch run.
STALE_PENDING_SECONDS = 120


@dataclass(frozen=True)
class InboxCursor:
    """The sensor's memory: the newest inbox id already handed to a run, and when the next
    retry run may be launched."""

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
        "run) launch one run keyed `inbox-FIRST-LAST`; failed events whose backoff is over, and "
        f"pending ones a run missed, launch a `retry-…` run at most every {RETRY_POLL_SECONDS} s. "
        "Each new batch is recorded as a materialization of `stripe_webhook_inbox` (`received`)."
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
        # The receiver stores events outside Dagster: the inbox's history shows each batch it
        # stored as a materialization, so the UI never reads "Never materialized" over events.
        stored = dg.AssetMaterialization(
            asset_key=stripe_webhook_inbox.key,
            description="stored by the webhook receiver",
            metadata={
                "received": new.count,
                "first_inbox_id": new.first_id,
                "last_inbox_id": new.last_id,
            },
        )
        return dg.SensorResult(
            run_requests=[request],
            asset_events=[stored],
            cursor=replace(cursor, last_id=new.last_id).serialize(),
        )
    now = time.time()
    if now >= cursor.next_sweep_at and (
        due := inbox.due_leftover_count(engine, cursor.last_id, STALE_PENDING_SECONDS)
    ):
        request = dg.RunRequest(
            run_key=f"retry-{cursor.last_id}-{int(now)}",
            tags={"stripe_webhooks/due_events": str(due)},
        )
        swept = replace(cursor, next_sweep_at=now + RETRY_POLL_SECONDS)
        return dg.SensorResult(run_requests=[request], cursor=swept.serialize())
    return dg.SensorResult(
        skip_reason=dg.SkipReason(f"no new webhook events after inbox id {cursor.last_id}")
    )
