"""Deliver ledger rows to Stripe, through the v1 meter-event API or the v2 meter event stream.

Rows come in the order they must arrive (per customer and meter: days, then revisions,
ascending; see `ledger.unsent_rows`), a chunk of whole customers at a time
(`ledger.unsent_chunks`). Each chunk is claimed by lease in one statement (`leases.py`), sent
without holding a database connection, and its outcomes written OUTCOME_BATCH at a time: a few
statements per thousand events, whatever the concurrency.

- v1: Stripe allows one concurrent meter-event call per customer per meter, so rows are grouped
  by (customer, event name) and each group is sent in order by one worker; groups run in
  parallel up to `concurrency`.
- v2: events go out up to 100 per stream request, `concurrency` requests in flight. The rows are
  sent in waves: wave k holds the k-th row of every (customer, event name) group, and a wave
  starts once the previous one is answered. A request therefore never holds two revisions of
  one customer's meter, and each revision arrives after the ones before it, as with v1.
  A 200 means accepted for processing: the row is `sent`, and a later meter error report marks
  it rejected (`meter_errors.py`), to be billed again under a new revision.

A pass stops sending after `breaker_failures` consecutive transient failures (a Stripe outage):
each failing call spends its whole retry budget, so going on would cost ~20 s per row for
nothing. The rows not yet attempted keep their status (their leases are given back) for the
next attempt, and the report says why it stopped.

It also stops the moment `stop_when` gives a reason: the reporting step passes the reporting
lock's `lost_reason`, so a run that lost its lock (and with it "one run at a time") sends nothing
more while the next lock holder takes over its rows.

A crash leaves claimed rows leased: once the lease expires a rerun resends the same identifiers,
which Stripe deduplicates within a day; after Stripe's 24 h dedupe a raw `sum` row is put in
doubt instead (see `in_doubt.py`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import stripe
from sqlalchemy import Engine

from billing_pipeline.db.statuses import LedgerStatus, SendOutcome
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
# Consecutive transient failures (calls, not rows) after which a pass stops sending.
DEFAULT_BREAKER_FAILURES = 20
# How many v1 outcomes are gathered before they are written in one statement.
OUTCOME_BATCH = 500
MeterEventApi = Literal["v1", "v2"]
ALREADY_SENT = "Stripe already had this identifier (and so this value): delivered before"
ACCEPTED_V2 = "accepted by the v2 meter event stream; Stripe validates it asynchronously"


@dataclass
class SendReport:
    """What one delivery pass did, for the asset's metadata and its pass/fail decision."""

    counts: Counter[SendOutcome] = field(default_factory=Counter)
    # The same outcomes per UTC day, so each partition of a range run shows its own.
    counts_by_day: Counter[tuple[date, SendOutcome]] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    # Who and which days the failures concern, for the step's failure metadata (and alerts).
    failed_customers: set[str] = field(default_factory=set)
    failed_days: set[date] = field(default_factory=set)
    transient_failures: int = 0
    # Why the pass stopped before its rows ran out (the breaker opened); None if it did not.
    stopped: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(
        self,
        row: LedgerRow,
        outcome: SendOutcome,
        error: str | None = None,
        *,
        transient: bool = False,
    ) -> None:
        with self._lock:
            self.counts[outcome] += 1
            self.counts_by_day[(row.day, outcome)] += 1
            if error is not None:
                self.failures.append((row.identifier, error))
                self.failed_customers.add(row.stripe_customer_id)
                self.failed_days.add(row.day)
            if transient:
                self.transient_failures += 1

    def merge(self, other: SendReport) -> None:
        """Add another pass's outcomes (the cancels that ran before the sends)."""
        with self._lock:
            self.counts += other.counts
            self.counts_by_day += other.counts_by_day
            self.failures += other.failures
            self.failed_customers |= other.failed_customers
            self.failed_days |= other.failed_days
            self.transient_failures += other.transient_failures
            self.stopped = self.stopped or other.stopped


class Breaker:
    """Opens after `limit` consecutive transient failures; any answer from Stripe (even a 4xx)
    closes the count again. Shared by a pass's workers."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the breaker needs a limit of at least one failure")
        self.limit = limit
        self._failures = 0
        self._lock = threading.Lock()

    def record(self, *, failed: bool) -> None:
        with self._lock:
            self._failures = self._failures + 1 if failed else 0

    def reason(self) -> str | None:
        """Why sending must stop now, or None."""
        with self._lock:
            if self._failures >= self.limit:
                return (
                    f"stopped sending after {self._failures} consecutive failed Stripe calls; "
                    "the rows not attempted are left for the next attempt"
                )
        return None


@dataclass(frozen=True)
class _Pass:
    """What every worker of one delivery pass shares."""

    engine: Engine
    billing: StripeBilling
    report: SendReport
    differences: frozenset[str]
    owner: str
    lease: timedelta
    breaker: Breaker
    stop_when: Callable[[], str | None] | None = None

    def stop(self) -> bool:
        """Whether to stop sending now; records why on the report."""
        reason = self.breaker.reason() or (self.stop_when() if self.stop_when else None)
        if reason is not None:
            self.report.stopped = self.report.stopped or reason
        return reason is not None


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
    breaker_failures: int = DEFAULT_BREAKER_FAILURES,
    stop_when: Callable[[], str | None] | None = None,
) -> SendReport:
    """Send chunks of whole customers (`ledger.unsent_chunks`) one after the other, so memory
    stays flat; `differences` names the meters whose rows are differences (raw `sum`). Stops
    early (`SendReport.stopped`) once `breaker_failures` calls in a row failed transiently, or
    once `stop_when` gives a reason."""
    run = _Pass(
        engine,
        stripe_billing,
        SendReport(),
        differences,
        leases.new_lease_owner(),
        lease,
        Breaker(breaker_failures),
        stop_when,
    )
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stripe-send") as pool:
        for rows in chunks:
            if run.stop():
                break
            groups: dict[tuple[str, str], list[LedgerRow]] = {}
            for row in rows:
                groups.setdefault(_key(row), []).append(row)
            _send_chunk(run, pool, list(groups.values()), api)
    return run.report


def _precheck(run: _Pass, row: LedgerRow, previous: datetime | None) -> RowOutcome | None:
    """The outcome of a claimed row that must not be sent (expired, or in doubt), else None."""
    now = datetime.now(UTC)
    if row.event_timestamp < now - STRIPE_WINDOW:
        run.report.record(row, SendOutcome.EXPIRED)
        return RowOutcome(row.identifier, LedgerStatus.EXPIRED, OUTSIDE_WINDOW)
    if row.meter in run.differences and previous is not None and previous < now - DEDUPE_SAFE:
        run.report.record(row, SendOutcome.IN_DOUBT)
        return RowOutcome(row.identifier, LedgerStatus.IN_DOUBT, IN_DOUBT_REASON, None, False)
    return None


class _OutcomeWriter:
    """Gathers the outcomes of one chunk's calls and writes them OUTCOME_BATCH at a time."""

    def __init__(self, run: _Pass) -> None:
        self.run = run
        self.written: set[str] = set()
        self._pending: list[RowOutcome] = []

    def add(self, outcomes: Sequence[RowOutcome]) -> None:
        self._pending += outcomes
        if len(self._pending) >= OUTCOME_BATCH:
            self.flush()

    def collect(self, futures: Sequence[Future[list[RowOutcome]]]) -> None:
        """Add each call's outcomes as it finishes. After an unexpected error the other calls
        finish first, so no row is given back while a call may still be sending it."""
        try:
            for future in as_completed(futures):
                self.add(future.result())
        finally:
            wait(futures)

    def flush(self) -> None:
        leases.write_outcomes(self.run.engine, self.run.owner, self._pending)
        self.written.update(o.identifier for o in self._pending)
        self._pending = []


def _send_chunk(
    run: _Pass, pool: ThreadPoolExecutor, groups: list[list[LedgerRow]], api: MeterEventApi
) -> None:
    """Claim the chunk in one statement, send it, write outcomes in batches."""
    identifiers = [row.identifier for group in groups for row in group]
    claimed = leases.claim(run.engine, identifiers, run.owner, run.lease)
    writer = _OutcomeWriter(run)
    try:
        if api == "v1":
            writer.collect([pool.submit(_send_group_v1, run, group, claimed) for group in groups])
        else:
            _send_waves_v2(run, pool, groups, claimed, writer)
        writer.flush()
    finally:
        # Rows claimed but not recorded (a group held elsewhere, an unexpected error) are given
        # back, so a retry of this step does not wait for their leases to expire (one Stripe
        # accepted is answered as a duplicate when resent).
        leases.release(run.engine, run.owner, [i for i in claimed if i not in writer.written])


def _send_group_v1(
    run: _Pass, rows: list[LedgerRow], claimed: dict[str, datetime | None]
) -> list[RowOutcome]:
    """One customer's meter, in order; stops at a row another sender holds, to keep order."""
    outcomes: list[RowOutcome] = []
    for index, row in enumerate(rows):
        if row.identifier not in claimed:
            for later in rows[index:]:
                run.report.record(later, SendOutcome.CLAIMED_ELSEWHERE)
            break
        if run.stop():
            for later in rows[index:]:
                run.report.record(later, SendOutcome.DEFERRED)
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
        run.breaker.record(failed=True)
        return _transient(run, row, error)
    run.breaker.record(failed=False)
    return _settled(run, row, result)


def _transient(run: _Pass, row: LedgerRow, error: stripe.StripeError) -> RowOutcome:
    message = f"{type(error).__name__}: {_message(error)} (will retry)"
    run.report.record(row, SendOutcome.FAILED, message, transient=True)
    return RowOutcome(row.identifier, LedgerStatus.FAILED, message, _code(error))


def _settled(run: _Pass, row: LedgerRow, result: SendResult) -> RowOutcome:
    if result.outcome is Outcome.SENT:
        run.report.record(row, SendOutcome.SENT)
        return RowOutcome(row.identifier, LedgerStatus.SENT)
    if result.outcome is Outcome.ALREADY_SENT:
        run.report.record(row, SendOutcome.ALREADY_SENT)
        return RowOutcome(row.identifier, LedgerStatus.SENT, ALREADY_SENT)
    if result.outcome is Outcome.EXPIRED:
        run.report.record(row, SendOutcome.EXPIRED)
        reason = f"{OUTSIDE_WINDOW}; Stripe said: {result.message}"
        return RowOutcome(row.identifier, LedgerStatus.EXPIRED, reason)
    message = f"Stripe rejected the event: {result.message}"
    run.report.record(row, SendOutcome.FAILED, message)
    return RowOutcome(row.identifier, LedgerStatus.FAILED, message, result.code)


def _send_waves_v2(
    run: _Pass,
    pool: ThreadPoolExecutor,
    groups: list[list[LedgerRow]],
    claimed: dict[str, datetime | None],
    writer: _OutcomeWriter,
) -> None:
    """Wave k sends the k-th row of every group; a group held elsewhere stops there."""
    blocked: set[tuple[str, str]] = set()
    depth = max((len(group) for group in groups), default=0)
    for k in range(depth):
        wave = [group[k] for group in groups if len(group) > k and _key(group[k]) not in blocked]
        if run.stop():
            for group in groups:
                for row in group[k:]:
                    if _key(row) not in blocked:
                        run.report.record(row, SendOutcome.DEFERRED)
            break
        to_send: list[LedgerRow] = []
        for row in wave:
            if row.identifier not in claimed:
                run.report.record(row, SendOutcome.CLAIMED_ELSEWHERE)
                blocked.add(_key(row))
            elif outcome := _precheck(run, row, claimed[row.identifier]):
                writer.add([outcome])
            else:
                to_send.append(row)
        batches = [
            to_send[i : i + MAX_STREAM_EVENTS] for i in range(0, len(to_send), MAX_STREAM_EVENTS)
        ]
        writer.collect([pool.submit(_stream, run, batch) for batch in batches])
    for group in groups:
        held = [index for index, row in enumerate(group) if row.identifier not in claimed]
        for later in group[held[0] + 1 :] if held else []:
            run.report.record(later, SendOutcome.CLAIMED_ELSEWHERE)


def _key(row: LedgerRow) -> tuple[str, str]:
    return (row.stripe_customer_id, row.event_name)


def _stream(run: _Pass, rows: list[LedgerRow]) -> list[RowOutcome]:
    events = [
        StreamEvent(r.event_name, r.stripe_customer_id, r.value, r.identifier, r.event_timestamp)
        for r in rows
    ]
    if run.stop():
        for row in rows:
            run.report.record(row, SendOutcome.DEFERRED)
        return []
    try:
        result = run.billing.stream_meter_events(events)
    except TRANSIENT_ERRORS as error:
        run.breaker.record(failed=True)
        return [_transient(run, row, error) for row in rows]
    run.breaker.record(failed=False)
    if result.outcome is Outcome.SENT:
        for row in rows:
            run.report.record(row, SendOutcome.SENT)
        return [RowOutcome(row.identifier, LedgerStatus.SENT, ACCEPTED_V2) for row in rows]
    return [_settled(run, row, result) for row in rows]


def _message(error: stripe.StripeError) -> str:
    return error.user_message or str(error) or type(error).__name__


def _code(error: stripe.StripeError) -> str | None:
    return error.code or (str(error.http_status) if error.http_status else None)
