"""One reporting run at a time, serialized by a Postgres session lock that dies with its holder.

Dagster pool slots are released by the run worker when a step ends; a worker killed with -9
never releases its slot, so every later reporting run would wait forever. A session-level
advisory lock is held by the database connection instead: when the process dies, the kernel
closes its socket, Postgres ends the session and releases the lock at once.

A run that finds the lock held waits, logging who holds it (pid, application, since when),
and gives up after `wait`: the step's retry policy tries again later.

The lock lives exactly as long as its connection: if that connection is lost (a network cut,
a database restart, `pg_terminate_backend`), the lock is gone and another run may take it at
once. So while the block runs, a watcher checks every CHECK_SECONDS on the lock's own connection
that the lock is still held, and `HeldLock.lost_reason` turns non-None the moment it is not:
the sender asks before every call and stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

LOCK_KEY = "billing.reporting"
DEFAULT_WAIT = timedelta(minutes=30)
POLL_SECONDS = 1.0
LOG_EVERY = 30
CHECK_SECONDS = 0.5


class ReportingLockTimeoutError(Exception):
    """Another reporting run held the lock for longer than this run was willing to wait."""


_HOLDER_SQL = """
SELECT a.pid, a.application_name, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objid = hashtext(:key)::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


_STILL_HELD_SQL = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted
      AND objid = hashtext(:key)::oid
)
"""


class HeldLock:
    """The reporting lock while held: watched on its own connection until released."""

    def __init__(self, connection: Connection, check_seconds: float = CHECK_SECONDS) -> None:
        self._connection = connection
        self._check_seconds = check_seconds
        self._lost: str | None = None
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="reporting-lock", daemon=True)
        self._watcher.start()

    def lost_reason(self) -> str | None:
        """Why this run no longer holds the lock, or None while it does."""
        return self._lost

    def _watch(self) -> None:
        while not self._done.wait(self._check_seconds):
            try:
                held = self._connection.execute(text(_STILL_HELD_SQL), {"key": LOCK_KEY})
                still = bool(held.scalar_one())
                self._connection.commit()
            except SQLAlchemyError as error:
                self._lost = f"lost the reporting lock with its connection ({type(error).__name__})"
                return
            if not still:
                self._lost = "no longer holds the reporting lock"
                return

    def stop(self) -> None:
        self._done.set()
        self._watcher.join()


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
) -> Iterator[HeldLock]:
    """Hold the reporting lock for the block, on a connection of its own; the block is told
    through the `HeldLock` if the lock is lost before it ends."""
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
        lock = HeldLock(connection)
        try:
            yield lock
        finally:
            lock.stop()
            if lock.lost_reason() is None:
                connection.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": LOCK_KEY}
                )
                connection.commit()
            else:
                # The session is gone, and its lock with it: nothing to release.
                connection.invalidate()
