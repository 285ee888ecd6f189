"""Deliver ledger rows to Stripe, through the v1 meter-event API or the v2 meter event stream.

Rows come in the order they must arrive (per customer and meter: days, then revisions,
ascending; see `ledger.unsent_rows`). Rows are claimed by lease (`leases.py`), sent without
holding a database connection, and their outcomes written in batches.

Rows are read and sent a chunk of whole customers at a time (`ledger.unsent_chunks`).

- v1: Stripe allows one concurrent meter-event call per customer per meter, so rows are grouped
  by (customer, event name) and each group is sent in order by one worker; groups run in
  parallel up to `concurrency`. A chunk is claimed in one statement.
- v2: events go out up to 100 per stream request, `concurrency` requests in flight. The rows are
  sent in waves: wave k holds the k-th row of every (customer, event name) group, and a wave
  starts once the previous one is answered. A request therefore never holds two revisions of
  one customer's meter, and each revision arrives after the ones before it, as with v1.
  A 200 means accepted for processing: the row is `sent`, and a later meter error report marks
  it rejected (`meter_errors.py`), to be billed again under a new revision.

A crash leaves claimed rows leased: once the lease expires a rerun resends the same identifiers,
which Stripe deduplicates within a day; after Stripe's 24 h dedupe a raw `sum` row is put in
doubt instead (see `in_doubt.py`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import stripe
from sqlalchemy import Engine

from billing_pipeline.db.statuses import LedgerStatus
from billing_pipeline.stripe_client import (
    MAX_STREAM_EVENTS,
    TRANSIENT_ERRORS,
    Outcome,
    SendResult,
    StreamEvent,
    StripeBilling,
)
from billing_pipeline.stripe_reporting import leases
from billing_pipeline.stripe_reporting.in_doubt import DEDUPE_SAFE, IN_DOUBT_REASON
from billing_pipeline.stripe_reporting.leases import DEFAULT_LEASE, RowOutcome
from billing_pipeline.stripe_reporting.ledger import OUTSIDE_WINDOW, STRIPE_WINDOW, LedgerRow

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
# How many v1 outcomes are gathered before they are written in one statement.
OUTCOME_BATCH = 500
MeterEventApi = Literal["v1", "v2"]
ALREADY_SENT = "Stripe already had this identifier (and so this value): delivered before"
ACCEPTED_V2 = "accepted by the v2 meter event stream; Stripe validates it asynchronously"


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


@dataclass(frozen=True)
class _Pass:
    """What every worker of one delivery pass shares."""

    engine: Engine
    billing: StripeBilling
    report: SendReport
    differences: frozenset[str]
    owner: str
    lease: timedelta


def send_rows(
    engine: Engine,
    stripe_billing: StripeBilling,
    rows: Sequence[LedgerRow],
    **settings: Any,
) -> SendReport:
    """Send `rows` (one chunk); `settings` as for `send_chunks`."""
    return send_chunks(engine, stripe_billing, [rows], **settings)


def send_chunks(
    engine: Engine,
    stripe_billing: StripeBilling,
    chunks: Iterable[Sequence[LedgerRow]],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    differences: frozenset[str] = frozenset(),
    api: MeterEventApi = "v1",
    lease: timedelta = DEFAULT_LEASE,
) -> SendReport:
    """Send chunks of whole customers (`ledger.unsent_chunks`) one after the other, so memory
    stays flat; `differences` names the meters whose rows are differences (raw `sum`)."""
    run = _Pass(engine, stripe_billing, SendReport(), differences, leases.new_lease_owner(), lease)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stripe-send") as pool:
        for rows in chunks:
            groups: dict[tuple[str, str], list[LedgerRow]] = {}
            for row in rows:
                groups.setdefault(_key(row), []).append(row)
            if api == "v1":
                _send_chunk_v1(run, pool, list(groups.values()))
            else:
                _send_waves_v2(run, pool, list(groups.values()))
    return run.report


def _precheck(run: _Pass, row: LedgerRow, previous: datetime | None) -> RowOutcome | None:
    """The outcome of a claimed row that must not be sent (expired, or in doubt), else None."""
    now = datetime.now(UTC)
    if row.event_timestamp < now - STRIPE_WINDOW:
        run.report.record(row, "expired")
        return RowOutcome(row.identifier, LedgerStatus.EXPIRED, OUTSIDE_WINDOW)
    if row.meter in run.differences and previous is not None and previous < now - DEDUPE_SAFE:
        run.report.record(row, "in_doubt")
        return RowOutcome(row.identifier, LedgerStatus.IN_DOUBT, IN_DOUBT_REASON, None, False)
    return None


def _send_chunk_v1(run: _Pass, pool: ThreadPoolExecutor, groups: list[list[LedgerRow]]) -> None:
    """Claim the chunk in one statement, send each group in order, write outcomes in batches."""
    identifiers = [row.identifier for group in groups for row in group]
    claimed = leases.claim(run.engine, identifiers, run.owner, run.lease)
    futures = [pool.submit(_send_group_v1, run, group, claimed) for group in groups]
    outcomes: list[RowOutcome] = []
    written: set[str] = set()
    try:
        for done, future in enumerate(as_completed(futures), start=1):
            outcomes += future.result()
            if len(outcomes) >= OUTCOME_BATCH or done == len(futures):
                leases.write_outcomes(run.engine, run.owner, outcomes)
                written.update(o.identifier for o in outcomes)
                outcomes = []
    finally:
        # After an unexpected error the other groups finish their calls first; then the rows
        # claimed but not recorded are given back, so a retry of this step does not wait for
        # their leases to expire (one Stripe accepted is answered as a duplicate when resent).
        wait(futures)
        leases.release(run.engine, run.owner, [i for i in claimed if i not in written])


def _send_group_v1(
    run: _Pass, rows: list[LedgerRow], claimed: dict[str, datetime | None]
) -> list[RowOutcome]:
    """One customer's meter, in order; stops at a row another sender holds, to keep order."""
    outcomes: list[RowOutcome] = []
    for index, row in enumerate(rows):
        if row.identifier not in claimed:
            for later in rows[index:]:
                run.report.record(later, "claimed_elsewhere")
            break
        outcomes.append(_precheck(run, row, claimed[row.identifier]) or _call_v1(run, row))
    return outcomes


def _call_v1(run: _Pass, row: LedgerRow) -> RowOutcome:
    try:
        result = run.billing.send_meter_event(
            event_name=row.event_name,
            customer=row.stripe_customer_id,
            value=row.value,
            identifier=row.identifier,
            timestamp=row.event_timestamp,
        )
    except TRANSIENT_ERRORS as error:
        return _transient(run, row, error)
    return _settled(run, row, result)


def _transient(run: _Pass, row: LedgerRow, error: stripe.StripeError) -> RowOutcome:
    message = f"{type(error).__name__}: {_message(error)} (will retry)"
    run.report.record(row, "failed", message, transient=True)
    return RowOutcome(row.identifier, LedgerStatus.FAILED, message, _code(error))


def _settled(run: _Pass, row: LedgerRow, result: SendResult) -> RowOutcome:
    if result.outcome is Outcome.SENT:
        run.report.record(row, "sent")
        return RowOutcome(row.identifier, LedgerStatus.SENT)
    if result.outcome is Outcome.ALREADY_SENT:
        run.report.record(row, "already_sent")
        return RowOutcome(row.identifier, LedgerStatus.SENT, ALREADY_SENT)
    if result.outcome is Outcome.EXPIRED:
        run.report.record(row, "expired")
        reason = f"{OUTSIDE_WINDOW}; Stripe said: {result.message}"
        return RowOutcome(row.identifier, LedgerStatus.EXPIRED, reason)
    message = f"Stripe rejected the event: {result.message}"
    run.report.record(row, "failed", message)
    return RowOutcome(row.identifier, LedgerStatus.FAILED, message, result.code)


def _send_waves_v2(run: _Pass, pool: ThreadPoolExecutor, groups: list[list[LedgerRow]]) -> None:
    """Wave k sends the k-th row of every group; a group held elsewhere stops there."""
    blocked: set[tuple[str, str]] = set()
    depth = max((len(group) for group in groups), default=0)
    for k in range(depth):
        wave = [group[k] for group in groups if len(group) > k and _key(group[k]) not in blocked]
        batches = [wave[i : i + MAX_STREAM_EVENTS] for i in range(0, len(wave), MAX_STREAM_EVENTS)]
        newly: set[tuple[str, str]] = set()
        for future in [pool.submit(_send_batch_v2, run, batch) for batch in batches]:
            newly.update(future.result())
        for group in groups:
            if len(group) > k and _key(group[k]) in newly:
                for later in group[k + 1 :]:
                    run.report.record(later, "claimed_elsewhere")
        blocked |= newly


def _key(row: LedgerRow) -> tuple[str, str]:
    return (row.stripe_customer_id, row.event_name)


def _send_batch_v2(run: _Pass, batch: list[LedgerRow]) -> set[tuple[str, str]]:
    """Claim, stream and record one request's rows; return the groups held by another sender."""
    claimed = leases.claim(run.engine, [r.identifier for r in batch], run.owner, run.lease)
    blocked = set()
    outcomes: list[RowOutcome] = []
    to_send: list[LedgerRow] = []
    for row in batch:
        if row.identifier not in claimed:
            run.report.record(row, "claimed_elsewhere")
            blocked.add(_key(row))
            continue
        outcome = _precheck(run, row, claimed[row.identifier])
        if outcome is None:
            to_send.append(row)
        else:
            outcomes.append(outcome)
    try:
        if to_send:
            outcomes += _stream(run, to_send)
        leases.write_outcomes(run.engine, run.owner, outcomes)
    except BaseException:
        leases.release(run.engine, run.owner, list(claimed))
        raise
    return blocked


def _stream(run: _Pass, rows: list[LedgerRow]) -> list[RowOutcome]:
    events = [
        StreamEvent(r.event_name, r.stripe_customer_id, r.value, r.identifier, r.event_timestamp)
        for r in rows
    ]
    try:
        result = run.billing.stream_meter_events(events)
    except TRANSIENT_ERRORS as error:
        return [_transient(run, row, error) for row in rows]
    if result.outcome is Outcome.SENT:
        for row in rows:
            run.report.record(row, "sent")
        return [RowOutcome(row.identifier, LedgerStatus.SENT, ACCEPTED_V2) for row in rows]
    return [_settled(run, row, result) for row in rows]


def _message(error: stripe.StripeError) -> str:
    return error.user_message or str(error) or type(error).__name__


def _code(error: stripe.StripeError) -> str | None:
    return error.code or (str(error.http_status) if error.http_status else None)
