"""One reporting run at a time, serialized by a Postgres session lock that dies with its holder.

Dagster pool slots are released by the run worker when a step ends; a worker killed with -9
never releases its slot, so every later reporting run would wait forever. A session-level
advisory lock is held by the database connection instead: when the process dies, the kernel
closes its socket, Postgres ends the session and releases the lock at once.

A run that finds the lock held waits, logging who holds it (pid, application, since when),
and gives up after `wait`: the step's retry policy tries again later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import Engine, text

LOCK_KEY = "billing.reporting"
DEFAULT_WAIT = timedelta(minutes=30)
POLL_SECONDS = 1.0
LOG_EVERY = 30


class ReportingLockTimeoutError(Exception):
    """Another reporting run held the lock for longer than this run was willing to wait."""


_HOLDER_SQL = """
SELECT a.pid, a.application_name, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objid = hashtext(:key)::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def holder(engine: Engine) -> str | None:
    """Who holds the reporting lock, for the log and the operator; None when free."""
    with engine.connect() as connection:
        row = connection.execute(text(_HOLDER_SQL), {"key": LOCK_KEY}).first()
    if row is None:
        return None
    name = row.application_name or "no application name"
    return f"Postgres backend pid {row.pid} ({name}, connected since {row.backend_start})"


@contextmanager
def reporting_lock(
    engine: Engine,
    log: Callable[[str], None],
    wait: timedelta = DEFAULT_WAIT,
) -> Iterator[None]:
    """Hold the reporting lock for the block, on a connection of its own."""
    deadline = time.monotonic() + wait.total_seconds()
    with engine.connect() as connection:
        polls = 0
        while not connection.execute(
            text("SELECT pg_try_advisory_lock(hashtext(:key))"), {"key": LOCK_KEY}
        ).scalar_one():
            connection.commit()
            if polls % LOG_EVERY == 0:
                log(f"waiting for the reporting lock, held by {holder(engine)}")
            if time.monotonic() > deadline:
                raise ReportingLockTimeoutError(
                    f"the reporting lock was held for over {wait} by {holder(engine)}"
                )
            polls += 1
            time.sleep(POLL_SECONDS)
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": LOCK_KEY})
            connection.commit()
