"""Child processes of the demo: a declarative spec, and start/stop by process group.

Each child runs in a process group of its own. Ctrl-C in a terminal signals the whole foreground
group; if the children were in it they would all start dying at once, in no order, while the
supervisor still relied on them. In their own groups they only hear from the supervisor, which
stops them in reverse start order. Signalling the group, not the pid, also reaches what a child
spawned itself (Dagster's code servers and run workers), which would otherwise outlive it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def script(name: str) -> str:
    """A console script of this environment, so the demo never picks another install on PATH."""
    return str(Path(sysconfig.get_path("scripts")) / name)


class ServiceError(RuntimeError):
    """A child could not be started; the message is meant for the person at the terminal."""


@dataclass(frozen=True)
class Service:
    """How to run one child: adding a process to the demo is one more of these.

    `ready_url` is polled until it answers at all (any HTTP status); `ready_check`, for a
    server that does not speak HTTP, until it returns True. `port` is checked to be free before
    starting, so a stale process from an earlier run gives a clear message instead of a bind
    error deep in a log.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    ready_check: Callable[[], bool] | None = None
    port: int | None = None
    ready_timeout: float = 180.0

    def is_ready(self) -> bool:
        if self.ready_check is not None and not self.ready_check():
            return False
        return self.ready_url is None or answers(self.ready_url)


def ensure_port_free(port: int, name: str, host: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise ServiceError(
                f"port {port} for {name} is already in use ({error.strerror}). Is another "
                "`billing-pipeline dev` still running? Stop it, or pick other ports "
                "(see `billing-pipeline dev --help`)."
            ) from error


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether an HTTP server responds at `url`, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


class RunningService:
    """A started child and its process group."""

    def __init__(self, service: Service, process: subprocess.Popen[bytes]) -> None:
        self.service = service
        self.process = process
        self.pgid = process.pid  # start_new_session makes the child its group's leader

    @property
    def name(self) -> str:
        return self.service.name

    def exited(self) -> int | None:
        return self.process.poll()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.service.ready_timeout
        while not self.service.is_ready():
            if (code := self.exited()) is not None:
                raise ServiceError(f"{self.name} exited with code {code} before it was ready")
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name} was not ready in time")
            time.sleep(0.5)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_groups(pgids: Sequence[int], sig: signal.Signals) -> None:
    for pgid in pgids:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            continue


def stop_process_groups(
    pgids: Sequence[int], timeout: float = 15.0, reap: Callable[[], object] | None = None
) -> None:
    """SIGTERM every group at once, wait for all of them to go, then SIGKILL what is left.

    Stopping in parallel keeps Ctrl-C quick: each Dagster process takes seconds to shut down.
    `reap` collects our own zombie leaders, which would otherwise keep their groups "alive".
    """
    _signal_groups(pgids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not any(group_alive(pgid) for pgid in pgids):
            return
        time.sleep(0.1)
    _signal_groups(pgids, signal.SIGKILL)
    if reap is not None:
        time.sleep(0.1)
        reap()


def stop_all(children: Sequence[RunningService]) -> None:
    stop_process_groups(
        [child.pgid for child in children],
        reap=lambda: [child.exited() for child in children],
    )


def start(service: Service, base_env: Mapping[str, str]) -> RunningService:
    if service.port is not None:
        ensure_port_free(service.port, service.name)
    process = subprocess.Popen(
        list(service.argv),
        env={**base_env, **service.env},
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    return RunningService(service, process)
