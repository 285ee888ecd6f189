"""The embedded PostgreSQL: private per user, and no orphan after a holder is killed with -9."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from billing_pipeline.db.embedded import EmbeddedPostgres, _ensure_private_runtime_dir, is_running
from billing_pipeline.db.engine import make_engine

HOLD_FOREVER = """
import sys, time
from pathlib import Path
from billing_pipeline.db.embedded import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
server.start()
print("ready", flush=True)
time.sleep(600)
"""


def test_runtime_dir_is_private_to_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))

    _ensure_private_runtime_dir()

    runtime_dir = Path(os.environ["XDG_RUNTIME_DIR"])
    assert runtime_dir.parent == tmp_path
    assert str(os.getuid()) in runtime_dir.name
    assert stat.S_IMODE(runtime_dir.stat().st_mode) == 0o700


def test_a_holder_killed_with_minus_9_leaves_no_orphan(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOREVER, str(pgdata)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert is_running(pgdata), "postgres outlives its killed holder until someone cleans up"

        # The next process joins the same cluster (its data intact) and, being the last live
        # holder, stops it on exit even though the killed one never let go.
        with EmbeddedPostgres(pgdata) as server:
            engine = make_engine(server.url, pool_size=1)
            with engine.connect() as connection:
                assert connection.execute(text("SELECT 1")).scalar_one() == 1
            engine.dispose()
        deadline = time.monotonic() + 10
        while is_running(pgdata) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not is_running(pgdata)
    finally:
        holder.kill()
