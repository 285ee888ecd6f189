"""What a running supervisor has started, on disk, so the next one can clean up after a kill -9;
and the settings it gave its children, so a command typed in another terminal finds them.

A supervisor killed with SIGKILL cannot stop its children: the Dagster webserver and daemon keep
running in their own process groups and hold the ports, and the next `make demo` would fail. The
record names the supervisor and each child's process group; a new supervisor refuses to start
while the recorded one lives, and otherwise stops whatever the dead one left behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import psutil

from billing_demo.dev.services import (
    RunningService,
    ServiceError,
    group_alive,
    stop_process_groups,
)
from billing_pipeline import config

STATE_FILE = "dev-supervisor.json"


def _alive(pid: int, create_time: float) -> bool:
    """Whether this very process still runs (a reused pid has another start time)."""
    try:
        return abs(psutil.Process(pid).create_time() - create_time) < 0.01
    except psutil.NoSuchProcess:
        return False


class SupervisorState:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE
        self._supervisor: dict[str, float] = {}
        self._children: list[dict[str, object]] = []

    def recover(self) -> list[str]:
        """Stop the children of a dead supervisor; return the names of those stopped."""
        if not self.path.exists():
            return []
        record = json.loads(self.path.read_text() or "{}")
        supervisor = record.get("supervisor", {})
        if supervisor and _alive(int(supervisor["pid"]), float(supervisor["create_time"])):
            raise ServiceError(
                f"`billing-pipeline dev` is already running for {self.path.parent} "
                f"(pid {supervisor['pid']}); stop it first (Ctrl-C, or kill {supervisor['pid']})."
            )
        alive = [child for child in record.get("children", []) if group_alive(int(child["pgid"]))]
        stop_process_groups([int(child["pgid"]) for child in alive])
        self.path.unlink()
        forget_settings(self.path.parent)
        return [str(child["name"]) for child in alive]

    def begin(self) -> None:
        me = psutil.Process()
        self._supervisor = {"pid": me.pid, "create_time": me.create_time()}
        self._write()

    def add(self, child: RunningService) -> None:
        self._children.append({"name": child.name, "pgid": child.pgid})
        self._write()

    def end(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"supervisor": self._supervisor, "children": self._children}))
        os.replace(tmp, self.path)


def record_settings(data_dir: Path, settings: Mapping[str, str]) -> None:
    """Write the settings commands read through `config.setting` (readable by this user only:
    the Dagster storage URL names the database's user)."""
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".dev-settings-")  # mode 0600
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(settings), handle, indent=2)
    os.replace(tmp, data_dir / config.DEV_SETTINGS_FILE)


def forget_settings(data_dir: Path) -> None:
    """Once the demo stops, its emulator and Dagster instance are gone: commands stop using them."""
    (data_dir / config.DEV_SETTINGS_FILE).unlink(missing_ok=True)
