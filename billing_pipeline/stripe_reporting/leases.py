"""Claiming ledger rows by lease, and writing what became of them in batches.

A sender claims a chunk of unsent rows in one statement (`lease_owner`, `lease_expires_at`, and
`first_attempted_at` committed before any call), makes its Stripe calls without holding a
database connection, then writes the outcomes of many rows in one statement. A sender that
dies leaves its leases behind; once they expire the rows are claimed again and the same
identifiers go out, which Stripe deduplicates within 24 h (older raw `sum` rows are put in
doubt instead, see `in_doubt.py`). Concurrency is therefore bounded by Stripe, not by the
connection pool.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import UNSENT_STATUSES, LedgerStatus

# Longer than any claimed chunk takes to send, retries included (a call gives up after ~15 s).
DEFAULT_LEASE = timedelta(minutes=10)


def new_lease_owner() -> str:
    """Who holds a lease: host and process (for a person reading the ledger), made unique."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RowOutcome:
    """What one claimed row became; written with its batch."""

    identifier: str
    status: LedgerStatus
    reason: str | None = None
    code: str | None = None
    count_attempt: bool = True


def claim(
    engine: Engine, identifiers: Sequence[str], owner: str, lease: timedelta
) -> dict[str, datetime | None]:
    """Lease those of `identifiers` that are unsent and not leased by a live sender.

    Returns each claimed identifier with its `first_attempted_at` from before this claim (None
    for a first attempt), which decides whether a raw `sum` row may still be resent.
    """
    if not identifiers:
        return {}
    with engine.begin() as connection:
        rows = connection.execute(
            text(
                """
                WITH picked AS (
                    SELECT identifier, first_attempted_at FROM billing.meter_ledger
                    WHERE identifier = ANY(:identifiers) AND status = ANY(:unsent)
                      AND (lease_expires_at IS NULL OR lease_expires_at < now())
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE billing.meter_ledger l
                SET lease_owner = :owner, lease_expires_at = now() + :lease,
                    first_attempted_at = coalesce(l.first_attempted_at, now())
                FROM picked WHERE l.identifier = picked.identifier
                RETURNING l.identifier, picked.first_attempted_at AS previous
                """
            ),
            {
                "identifiers": list(identifiers),
                "unsent": list(UNSENT_STATUSES),
                "owner": owner,
                "lease": lease,
            },
        )
        return {row.identifier: row.previous for row in rows}


def write_outcomes(engine: Engine, owner: str, outcomes: Sequence[RowOutcome]) -> None:
    """Record a batch of outcomes and free their leases, one statement per kind of outcome.

    Only rows still unsent and leased by `owner` are written: a meter error report that already
    marked a row rejected wins over the 200 that preceded it. Rows sharing an outcome (nearly
    all of a batch) are one primary-key lookup each; joining the rows to a list of outcomes
    made the planner loop over the list once per row.
    """
    kinds: dict[tuple[str, str | None, str | None, int], list[str]] = defaultdict(list)
    for o in outcomes:
        kinds[(str(o.status), o.reason, o.code, int(o.count_attempt))].append(o.identifier)
    if not kinds:
        return
    with engine.begin() as connection:
        for (status, reason, code, attempt), identifiers in kinds.items():
            connection.execute(
                text(
                    """
                    UPDATE billing.meter_ledger
                    SET status = :status, status_reason = :reason, error_code = :code,
                        attempts = attempts + :attempt, updated_at = now(),
                        sent_at = CASE WHEN :status = :sent THEN now() ELSE sent_at END,
                        lease_owner = NULL, lease_expires_at = NULL
                    WHERE identifier = ANY(:identifiers) AND lease_owner = :owner
                      AND status = ANY(:unsent)
                    """
                ),
                {
                    "status": status,
                    "reason": reason,
                    "code": code,
                    "attempt": attempt,
                    "sent": LedgerStatus.SENT,
                    "identifiers": identifiers,
                    "owner": owner,
                    "unsent": list(UNSENT_STATUSES),
                },
            )


def release(engine: Engine, owner: str, identifiers: Sequence[str]) -> None:
    """Give back leases on rows this sender claimed but will not send now."""
    if not identifiers:
        return
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE billing.meter_ledger SET lease_owner = NULL, lease_expires_at = NULL "
                "WHERE identifier = ANY(:identifiers) AND lease_owner = :owner"
            ),
            {"identifiers": list(identifiers), "owner": owner},
        )


def revoke_leases(engine: Engine) -> int:
    """Free every lease; only for a caller holding the reporting lock.

    One reporting run holds that lock at a time and a dead run's lock is freed with its
    connection, so the leases the lock holder finds were left by a run that died: waiting for
    them to expire would only delay billing. Returns how many rows were freed.
    """
    with engine.begin() as connection:
        result = connection.execute(
            text(
                "UPDATE billing.meter_ledger SET lease_owner = NULL, lease_expires_at = NULL "
                "WHERE lease_owner IS NOT NULL AND status = ANY(:unsent)"
            ),
            {"unsent": list(UNSENT_STATUSES)},
        )
        return result.rowcount
