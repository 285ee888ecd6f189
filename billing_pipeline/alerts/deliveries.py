"""Alerts recorded once per sink, then delivered with bounded retries: `billing.alert_deliveries`.

An alert is recorded under its deterministic key before anything is sent (`INSERT … ON CONFLICT
DO NOTHING`), so a sensor tick that runs again (after a crash, or because two sensors see the
same failure) finds the row and sends nothing new. Due rows are claimed with a lease (`FOR
UPDATE SKIP LOCKED`, then `next_attempt_at` pushed past the attempt), so two sensors delivering
at once never send one row twice; a sensor that died mid-send leaves the lease to expire.
A failed attempt is tried again after a backoff, at most `MAX_ATTEMPTS` times in all, then the
row is `failed` with the sink's last answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import insert

from billing_pipeline.alerts.messages import Alert
from billing_pipeline.alerts.sinks import DeliveryError, Sink
from billing_pipeline.db.schema import alert_deliveries
from billing_pipeline.db.statuses import AlertDeliveryStatus

MAX_ATTEMPTS = 5
RETRY_BASE = timedelta(seconds=30)  # 30 s, 1 min, 2 min, 4 min: a sink down for ~8 minutes
LEASE = timedelta(minutes=5)
CLAIM_LIMIT = 50


@dataclass
class DeliveryReport:
    """What one delivery pass did, for the sensor's log and skip message."""

    sent: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.sent)} sent, {len(self.retrying)} to retry, {len(self.given_up)} given up"
        )


def record(engine: Engine, alert: Alert, sinks: Sequence[Sink]) -> int:
    """Record `alert` for every sink that does not have it yet; how many rows were new."""
    if not sinks:
        return 0
    statement = (
        insert(alert_deliveries)
        .values([{"alert_key": alert.key, "sink": s.name, "alert": alert.to_json()} for s in sinks])
        .on_conflict_do_nothing(index_elements=["alert_key", "sink"])
    )
    with engine.begin() as connection:
        return connection.execute(statement).rowcount


def deliver_due(engine: Engine, sinks: Sequence[Sink]) -> DeliveryReport:
    """Send every due alert of the configured sinks, oldest first, one attempt each."""
    by_name = {sink.name: sink for sink in sinks}
    report = DeliveryReport()
    if not by_name:
        return report
    with engine.begin() as connection:
        claimed = connection.execute(
            text(
                """
                UPDATE billing.alert_deliveries d
                SET attempts = d.attempts + 1, next_attempt_at = now() + :lease
                FROM (
                    SELECT alert_key, sink FROM billing.alert_deliveries
                    WHERE status = :pending AND next_attempt_at <= now()
                      AND sink = ANY(:sinks)
                    ORDER BY created_at, alert_key, sink
                    LIMIT :limit
                    FOR UPDATE SKIP LOCKED
                ) due
                WHERE d.alert_key = due.alert_key AND d.sink = due.sink
                RETURNING d.alert_key, d.sink, d.alert, d.attempts
                """
            ),
            {
                "lease": LEASE,
                "pending": AlertDeliveryStatus.PENDING,
                "sinks": list(by_name),
                "limit": CLAIM_LIMIT,
            },
        ).all()
    for row in sorted(claimed, key=lambda r: (r.alert_key, r.sink)):
        label = f"{row.alert_key} → {row.sink}"
        try:
            by_name[row.sink].send(Alert.from_json(row.alert))
        except DeliveryError as error:
            given_up = row.attempts >= MAX_ATTEMPTS
            _record_failure(engine, row.alert_key, row.sink, row.attempts, str(error), given_up)
            (report.given_up if given_up else report.retrying).append(f"{label}: {error}")
        else:
            _record_sent(engine, row.alert_key, row.sink)
            report.sent.append(label)
    return report


def _record_sent(engine: Engine, alert_key: str, sink: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE billing.alert_deliveries SET status = :sent, sent_at = now(), "
                "last_error = NULL WHERE alert_key = :key AND sink = :sink"
            ),
            {"sent": AlertDeliveryStatus.SENT, "key": alert_key, "sink": sink},
        )


def _record_failure(
    engine: Engine, alert_key: str, sink: str, attempts: int, error: str, given_up: bool
) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE billing.alert_deliveries SET status = :status, last_error = :error, "
                "next_attempt_at = now() + :backoff WHERE alert_key = :key AND sink = :sink"
            ),
            {
                "status": AlertDeliveryStatus.FAILED if given_up else AlertDeliveryStatus.PENDING,
                "error": error,
                "backoff": RETRY_BASE * 2 ** (attempts - 1),
                "key": alert_key,
                "sink": sink,
            },
        )
