"""Deliver ledger rows to Stripe: concurrently, but never two calls for one customer and meter.

Stripe allows one concurrent meter-event call per customer per meter, so rows are grouped by
(customer, event name) and each group is sent in order by one worker; groups run in parallel up
to `concurrency`. Each row is sent while its ledger row is locked (`FOR UPDATE SKIP LOCKED`):
a concurrent run of the same partition skips it, and a crash releases the lock with the row still
pending, so the rerun resends the same identifier and Stripe's duplicate answer marks it sent.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import stripe
from sqlalchemy import Connection, Engine, text

from billing_pipeline.stripe_client import TRANSIENT_ERRORS, Outcome, StripeBilling
from billing_pipeline.stripe_reporting.ledger import OUTSIDE_WINDOW, STRIPE_WINDOW, LedgerRow

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8


@dataclass
class SendReport:
    """What one delivery pass did, for the asset's metadata and its pass/fail decision."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    transient_failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(
        self, row: LedgerRow, outcome: str, error: str | None = None, *, transient: bool = False
    ) -> None:
        with self._lock:
            self.counts[outcome] += 1
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
) -> SendReport:
    report = SendReport()
    groups: dict[tuple[str | None, str], list[LedgerRow]] = defaultdict(list)
    for row in rows:
        groups[(row.stripe_customer_id, row.event_name)].append(row)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stripe-send") as pool:
        for future in [
            pool.submit(_send_group, engine, stripe_billing, group, report)
            for group in groups.values()
        ]:
            future.result()
    return report


def _send_group(
    engine: Engine, stripe_billing: StripeBilling, rows: list[LedgerRow], report: SendReport
) -> None:
    for row in rows:
        _send_one(engine, stripe_billing, row, report)


def _send_one(
    engine: Engine, stripe_billing: StripeBilling, row: LedgerRow, report: SendReport
) -> None:
    with engine.connect() as connection, connection.begin():
        claimed = connection.execute(
            text(
                "SELECT 1 FROM billing.meter_ledger WHERE identifier = :identifier "
                "AND status IN ('pending', 'failed') FOR UPDATE SKIP LOCKED"
            ),
            {"identifier": row.identifier},
        ).first()
        if claimed is None:
            report.record(row, "claimed_elsewhere")
            return
        if row.event_timestamp < datetime.now(UTC) - STRIPE_WINDOW:
            _mark(connection, row, "expired", OUTSIDE_WINDOW)
            report.record(row, "expired")
            return
        assert row.stripe_customer_id is not None, "only rows with a customer are ever pending"
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
            _mark(connection, row, "failed", message, _code(error))
            report.record(row, "failed", message, transient=True)
            return
        if result.outcome is Outcome.SENT:
            _mark(connection, row, "sent", None)
            report.record(row, "sent")
        elif result.outcome is Outcome.ALREADY_SENT:
            _mark(connection, row, "sent", "Stripe already had this identifier: delivered before")
            report.record(row, "already_sent")
        elif result.outcome is Outcome.EXPIRED:
            _mark(connection, row, "expired", f"{OUTSIDE_WINDOW}; Stripe said: {result.message}")
            report.record(row, "expired")
        else:
            message = f"Stripe rejected the event: {result.message}"
            _mark(connection, row, "failed", message, result.code)
            report.record(row, "failed", message)


def _mark(
    connection: Connection, row: LedgerRow, status: str, reason: str | None, code: str | None = None
) -> None:
    connection.execute(
        text(
            """
            UPDATE billing.meter_ledger
            SET status = :status, status_reason = :reason, error_code = :code,
                attempts = attempts + 1, updated_at = now(),
                sent_at = CASE WHEN :status = 'sent' THEN now() ELSE sent_at END
            WHERE identifier = :identifier
            """
        ),
        {"status": status, "reason": reason, "code": code, "identifier": row.identifier},
    )


def _message(error: stripe.StripeError) -> str:
    return error.user_message or str(error) or type(error).__name__


def _code(error: stripe.StripeError) -> str | None:
    return error.code or (str(error.http_status) if error.http_status else None)
