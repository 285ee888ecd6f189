"""Deliver ledger rows to Stripe: concurrently, but never two calls for one customer and meter.

Stripe allows one concurrent meter-event call per customer per meter, so rows are grouped by
(customer, event name) and each group is sent in order (days, then revisions, ascending) by one
worker; groups run in parallel up to `concurrency`. Before the first call for a row its
`first_attempted_at` is committed; the call is made while the row is locked
(`FOR UPDATE SKIP LOCKED`). A crash leaves the row pending: a rerun within the day resends the
same identifier and Stripe's duplicate answer (the same value: the identifier hashes it) marks it
sent; after Stripe's 24 h dedupe a raw `sum` row is put in doubt instead (see `in_doubt.py`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import stripe
from sqlalchemy import Connection, Engine, text

from billing_pipeline.db.statuses import UNSENT_STATUSES, LedgerStatus
from billing_pipeline.stripe_client import TRANSIENT_ERRORS, Outcome, StripeBilling
from billing_pipeline.stripe_reporting.in_doubt import DEDUPE_SAFE, IN_DOUBT_REASON
from billing_pipeline.stripe_reporting.ledger import OUTSIDE_WINDOW, STRIPE_WINDOW, LedgerRow

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8


@dataclass
class SendReport:
    """What one delivery pass did, for the asset's metadata and its pass/fail decision."""

    counts: Counter[str] = field(default_factory=Counter)
    # The same outcomes per UTC day, so each partition of a range run shows its own.
    counts_by_day: Counter[tuple[date, str]] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    transient_failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(
        self, row: LedgerRow, outcome: str, error: str | None = None, *, transient: bool = False
    ) -> None:
        with self._lock:
            self.counts[outcome] += 1
            self.counts_by_day[(row.day, outcome)] += 1
            if error is not None:
                self.failures.append((row.identifier, error))
            if transient:
                self.transient_failures += 1


def send_rows(
    engine: Engine,
    stripe_billing: StripeBilling,
    rows: Sequence[LedgerRow],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    differences: frozenset[str] = frozenset(),
) -> SendReport:
    """Send `rows`; `differences` names the meters whose rows are differences (raw `sum`)."""
    report = SendReport()
    groups: dict[tuple[str | None, str], list[LedgerRow]] = defaultdict(list)
    for row in rows:
        groups[(row.stripe_customer_id, row.event_name)].append(row)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stripe-send") as pool:
        for future in [
            pool.submit(_send_group, engine, stripe_billing, group, report, differences)
            for group in groups.values()
        ]:
            future.result()
    return report


def _send_group(
    engine: Engine,
    stripe_billing: StripeBilling,
    rows: list[LedgerRow],
    report: SendReport,
    differences: frozenset[str],
) -> None:
    for row in rows:
        _send_one(engine, stripe_billing, row, report, differences)


def _send_one(
    engine: Engine,
    stripe_billing: StripeBilling,
    row: LedgerRow,
    report: SendReport,
    differences: frozenset[str],
) -> None:
    _record_attempt(engine, row)
    with engine.connect() as connection, connection.begin():
        claimed = connection.execute(
            text(
                "SELECT first_attempted_at FROM billing.meter_ledger "
                "WHERE identifier = :identifier AND status = ANY(:unsent) "
                "FOR UPDATE SKIP LOCKED"
            ),
            {"identifier": row.identifier, "unsent": list(UNSENT_STATUSES)},
        ).first()
        if claimed is None:
            report.record(row, "claimed_elsewhere")
            return
        now = datetime.now(UTC)
        if row.event_timestamp < now - STRIPE_WINDOW:
            _mark(connection, row, LedgerStatus.EXPIRED, OUTSIDE_WINDOW)
            report.record(row, "expired")
            return
        if row.meter in differences and claimed.first_attempted_at < now - DEDUPE_SAFE:
            _mark(connection, row, LedgerStatus.IN_DOUBT, IN_DOUBT_REASON, count_attempt=False)
            report.record(row, "in_doubt")
            return
        try:
            result = stripe_billing.send_meter_event(
                event_name=row.event_name,
                customer=row.stripe_customer_id,
                value=row.value,
                identifier=row.identifier,
                timestamp=row.event_timestamp,
            )
        except TRANSIENT_ERRORS as error:
            message = f"{type(error).__name__}: {_message(error)} (will retry)"
            _mark(connection, row, LedgerStatus.FAILED, message, _code(error))
            report.record(row, "failed", message, transient=True)
            return
        if result.outcome is Outcome.SENT:
            _mark(connection, row, LedgerStatus.SENT, None)
            report.record(row, "sent")
        elif result.outcome is Outcome.ALREADY_SENT:
            reason = "Stripe already had this identifier (and so this value): delivered before"
            _mark(connection, row, LedgerStatus.SENT, reason)
            report.record(row, "already_sent")
        elif result.outcome is Outcome.EXPIRED:
            reason = f"{OUTSIDE_WINDOW}; Stripe said: {result.message}"
            _mark(connection, row, LedgerStatus.EXPIRED, reason)
            report.record(row, "expired")
        else:
            message = f"Stripe rejected the event: {result.message}"
            _mark(connection, row, LedgerStatus.FAILED, message, result.code)
            report.record(row, "failed", message)


def _record_attempt(engine: Engine, row: LedgerRow) -> None:
    """Commit that a call may be about to reach Stripe, before it is made."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE billing.meter_ledger SET first_attempted_at = now() "
                "WHERE identifier = :identifier AND first_attempted_at IS NULL "
                "AND status = ANY(:unsent)"
            ),
            {"identifier": row.identifier, "unsent": list(UNSENT_STATUSES)},
        )


def _mark(
    connection: Connection,
    row: LedgerRow,
    status: LedgerStatus,
    reason: str | None,
    code: str | None = None,
    *,
    count_attempt: bool = True,
) -> None:
    connection.execute(
        text(
            """
            UPDATE billing.meter_ledger
            SET status = :status, status_reason = :reason, error_code = :code,
                attempts = attempts + :attempt, updated_at = now(),
                sent_at = CASE WHEN :sent THEN now() ELSE sent_at END
            WHERE identifier = :identifier
            """
        ),
        {
            "status": status,
            "reason": reason,
            "code": code,
            "attempt": int(count_attempt),
            "sent": status is LedgerStatus.SENT,
            "identifier": row.identifier,
        },
    )


def _message(error: stripe.StripeError) -> str:
    return error.user_message or str(error) or type(error).__name__


def _code(error: stripe.StripeError) -> str | None:
    return error.code or (str(error.http_status) if error.http_status else None)
