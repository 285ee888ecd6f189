"""The durable inbox: storing verified events once, and the queries the sensor and job share.

Every verified event (snapshot or thin) goes through `store_event`, the single place
that decides what "stored once" means: the Stripe event id is unique and a redelivery is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from billing_pipeline.db.statuses import OPEN_INBOX_STATUSES, InboxStatus
from billing_pipeline.webhooks.events import InboxEvent

MAX_ERROR_LENGTH = 2000
# Statuses are bound as parameters, never spelled in SQL, so InboxStatus is the one vocabulary.
_OPEN = list(OPEN_INBOX_STATUSES)


def store_event(engine: Engine, event: InboxEvent) -> bool:
    """Commit the event to the inbox; return False if it was already there (a redelivery).

    The payload is cast to jsonb by Postgres from the verified text, so what is stored is what
    Stripe signed. `ON CONFLICT DO NOTHING` makes concurrent duplicate deliveries safe: the unique
    index lets exactly one insert win and the others see a committed row.
    """
    with engine.begin() as connection:
        inserted = connection.execute(
            text(
                """
                INSERT INTO billing.webhook_inbox
                    (event_id, event_type, stripe_created, livemode, api_version, payload)
                VALUES (:event_id, :event_type, :stripe_created, :livemode, :api_version,
                        CAST(:payload AS jsonb))
                ON CONFLICT (event_id) DO NOTHING
                RETURNING id
                """
            ),
            {
                "event_id": event.event_id,
                "event_type": event.event_type,
                "stripe_created": event.stripe_created,
                "livemode": event.livemode,
                "api_version": event.api_version,
                "payload": event.payload_json,
            },
        ).scalar_one_or_none()
    return inserted is not None


@dataclass(frozen=True)
class NewEvents:
    """Inbox rows past the sensor's cursor: one batch for one run."""

    first_id: int
    last_id: int
    count: int


def new_events_since(engine: Engine, last_id: int) -> NewEvents | None:
    """The rows inserted after `last_id`, whatever their status, or None if there are none."""
    with engine.connect() as connection:
        first, last, count = connection.execute(
            text("SELECT min(id), max(id), count(*) FROM billing.webhook_inbox WHERE id > :id"),
            {"id": last_id},
        ).one()
    return None if count == 0 else NewEvents(first_id=first, last_id=last, count=count)


def due_leftover_count(engine: Engine, last_id: int, stale_pending_seconds: int) -> int:
    """Open rows that are due and that no batch run will pick up on its own.

    Failed rows whose backoff is over wait for a retry run; pending rows at or below the cursor
    whose run should long have handled them were left by a crashed run, or committed after a
    higher id (identity values are handed out before commit, so a slow insert can land behind
    the cursor). Times are the database's, the clock `next_attempt_at` is written with.
    """
    with engine.connect() as connection:
        count: int = connection.execute(
            text(
                """
                SELECT count(*) FROM billing.webhook_inbox
                WHERE (status = :failed AND next_attempt_at <= now())
                   OR (status = :pending AND id <= :id
                       AND received_at < now() - make_interval(secs => :stale))
                """
            ),
            {
                "id": last_id,
                "stale": stale_pending_seconds,
                "failed": InboxStatus.FAILED,
                "pending": InboxStatus.PENDING,
            },
        ).scalar_one()
    return count


def due_event_ids(engine: Engine) -> list[int]:
    """Open rows whose next attempt is due, oldest first by Stripe's `created` (then arrival
    order for equal seconds). A failed row waiting out its backoff is not among them, whoever
    launched the run."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    """
                    SELECT id FROM billing.webhook_inbox
                    WHERE status = ANY(:open) AND next_attempt_at <= now()
                    ORDER BY stripe_created, id
                    """
                ),
                {"open": _OPEN},
            ).scalars()
        )


def stored_event_ids(engine: Engine, event_ids: Sequence[str]) -> set[str]:
    """Which of these Stripe event ids the inbox already holds, whatever their status."""
    with engine.connect() as connection:
        return set(
            connection.execute(
                text("SELECT event_id FROM billing.webhook_inbox WHERE event_id = ANY(:ids)"),
                {"ids": list(event_ids)},
            ).scalars()
        )


@dataclass(frozen=True)
class ClaimedEvent:
    """An open inbox row locked by the current transaction for processing."""

    id: int
    event_id: str
    event_type: str
    stripe_created: datetime
    attempts: int
    payload: dict[str, Any]


def claim(connection: Connection, row_id: int) -> ClaimedEvent | None:
    """Lock the row if it is still open and due; None if it is done, waiting out its backoff, or
    held by another run.

    `SKIP LOCKED` lets two runs overlap safely: each event is applied by one of them, and a row
    found processed returns early, which is what makes redelivery and re-runs idempotent.
    """
    row = (
        connection.execute(
            text(
                """
                SELECT id, event_id, event_type, stripe_created, attempts, payload
                FROM billing.webhook_inbox
                WHERE id = :id AND status = ANY(:open) AND next_attempt_at <= now()
                FOR UPDATE SKIP LOCKED
                """
            ),
            {"id": row_id, "open": _OPEN},
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else ClaimedEvent(**row)


def mark_done(connection: Connection, row_id: int, status: InboxStatus) -> None:
    """Close the row as `processed` or `ignored`."""
    connection.execute(
        text(
            """
            UPDATE billing.webhook_inbox
            SET status = :status, processed_at = now(), last_error = NULL
            WHERE id = :id
            """
        ),
        {"id": row_id, "status": status},
    )


def mark_failed(
    connection: Connection,
    row_id: int,
    attempts: int,
    error: str,
    status: InboxStatus,
    retry_in: timedelta,
) -> None:
    """Record a handler error: `failed` (due again `retry_in` from now) or `dead_letter`."""
    connection.execute(
        text(
            """
            UPDATE billing.webhook_inbox
            SET status = :status, attempts = :attempts, last_error = :error,
                next_attempt_at = now() + :retry_in
            WHERE id = :id
            """
        ),
        {
            "id": row_id,
            "status": status,
            "attempts": attempts,
            "error": error[:MAX_ERROR_LENGTH],
            "retry_in": retry_in,
        },
    )


@dataclass(frozen=True)
class DeadLetter:
    event_id: str
    event_type: str
    attempts: int
    last_error: str | None


def dead_letters(engine: Engine, limit: int = 50) -> tuple[int, Sequence[DeadLetter]]:
    """How many events are dead-lettered, and the newest `limit` of them for display."""
    with engine.connect() as connection:
        total: int = connection.execute(
            text("SELECT count(*) FROM billing.webhook_inbox WHERE status = :dead"),
            {"dead": InboxStatus.DEAD_LETTER},
        ).scalar_one()
        rows = connection.execute(
            text(
                """
                SELECT event_id, event_type, attempts, last_error FROM billing.webhook_inbox
                WHERE status = :dead ORDER BY id DESC LIMIT :limit
                """
            ),
            {"limit": limit, "dead": InboxStatus.DEAD_LETTER},
        ).mappings()
        return total, [DeadLetter(**row) for row in rows]


def requeue(engine: Engine, event_id: str) -> bool:
    """Give a dead-lettered or failed event a fresh set of attempts after its cause is fixed."""
    with engine.begin() as connection:
        updated = connection.execute(
            text(
                """
                UPDATE billing.webhook_inbox
                SET status = :pending, attempts = 0, last_error = NULL, next_attempt_at = now()
                WHERE event_id = :event_id AND status = ANY(:stuck)
                RETURNING id
                """
            ),
            {
                "event_id": event_id,
                "pending": InboxStatus.PENDING,
                "stuck": [InboxStatus.FAILED, InboxStatus.DEAD_LETTER],
            },
        ).scalar_one_or_none()
    return updated is not None
