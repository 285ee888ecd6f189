"""Where the pipeline's sender spends its time, without changing it: call timers and plans.

`CallTimers` wraps, for the length of a run, the sender's four kinds of work (claiming a chunk,
the Stripe call, writing outcomes, releasing leases) with wall-clock timers, by replacing the
module attributes the sender looks them up through; the sender's own code is untouched.
`explain_batch` runs one real claim and one real outcome write for a chunk of fresh rows under
`EXPLAIN (ANALYZE, BUFFERS, WAL)`, so the statements' own cost is seen apart from the
queueing for CPU that the sampled run shows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, event

from billing_pipeline.db.statuses import LedgerStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting import leases
from billing_pipeline.stripe_reporting.leases import DEFAULT_LEASE, RowOutcome
from billing_pipeline.stripe_reporting.ledger import unsent_chunks

_TIMED_LEASES = ("claim", "write_outcomes", "release")
_TIMED_CALLS = ("send_meter_event", "stream_meter_events")


class CallTimers:
    """Count and total wall seconds of the sender's database statements and Stripe calls."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - began
                with self._lock:
                    totals = self.calls.setdefault(name, [0, 0.0])
                    totals[0] += 1
                    totals[1] += elapsed

        return timed

    def __enter__(self) -> CallTimers:
        for name in _TIMED_LEASES:
            self._replace(leases, name, f"leases.{name}")
        for name in _TIMED_CALLS:
            self._replace(StripeBilling, name, f"StripeBilling.{name}")
        return self

    def _replace(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)
        self._saved.append((owner, attribute, original))
        setattr(owner, attribute, self._wrap(label, original))

    def __exit__(self, *_: object) -> None:
        for owner, attribute, original in reversed(self._saved):
            setattr(owner, attribute, original)
        self._saved.clear()

    def table_rows(self) -> list[list[str]]:
        """Per kind of work: calls, mean ms and total seconds, summed over every thread (the
        main thread claims and writes v1 chunks while the workers call Stripe)."""
        rows = []
        for name, (count, total) in sorted(self.calls.items(), key=lambda item: -item[1][1]):
            rows.append(
                [f"`{name}`", f"{int(count):,}", f"{total / count * 1000:.1f}", f"{total:.1f}"]
            )
        return rows


@contextmanager
def _explained(engine: Engine, marker: str, plans: list[str]) -> Iterator[None]:
    """Run the next statement containing `marker` under EXPLAIN ANALYZE (it still executes and
    commits) and keep its plan; the caller then sees no rows, which both callers accept."""

    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> tuple[str, Any]:
        parameters = rest[0]
        if marker in statement and not plans:
            statement = "EXPLAIN (ANALYZE, BUFFERS, WAL) " + statement
        return statement, parameters

    def after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.startswith("EXPLAIN") and not plans:
            plans.append("\n".join(row[0] for row in cursor.fetchall()))

    event.listen(engine, "before_cursor_execute", before, retval=True)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def explain_batch(engine: Engine, day: date, meters: list[str], size: int) -> dict[str, str]:
    """Plans of one claim and one outcome write of `size` fresh rows of `day` (already planned):
    the statements the sender runs per v2 request."""
    rows = next(unsent_chunks(engine, meters, day, day + timedelta(days=1)))[:size]
    identifiers = [row.identifier for row in rows]
    owner = leases.new_lease_owner()
    claim_plan: list[str] = []
    with _explained(engine, "FOR UPDATE SKIP LOCKED", claim_plan):
        leases.claim(engine, identifiers, owner, DEFAULT_LEASE)
    # The claim ran for real; write the rows' outcomes as a 200 from the stream would.
    write_plan: list[str] = []
    with _explained(engine, "attempts = attempts +", write_plan):
        leases.write_outcomes(
            engine, owner, [RowOutcome(i, LedgerStatus.SENT, "bench explain") for i in identifiers]
        )
    return {"rows": str(len(identifiers)), "claim": claim_plan[0], "write": write_plan[0]}
