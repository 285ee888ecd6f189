"""`billing-pipeline dev` end to end: starts, loads the code location, and leaves nothing behind.

These start real processes (embedded PostgreSQL, the Dagster webserver and daemon), so they are
few: one clean Ctrl-C, one recovery after the supervisor is killed with -9.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from billing_pipeline import config
from billing_pipeline.db.embedded import is_running
from billing_pipeline_tests.support.network import free_port

STARTUP_TIMEOUT = 120.0
LOCATION_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


class Demo:
    """One `billing-pipeline dev` in its own session, as a terminal would run it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        # A fresh machine: no server, no Stripe account. The suite's own DATABASE_URL (CI's
        # second pass) must not be migrated or seeded by the demo.
        unset = {
            config.DATABASE_URL,
            config.DAGSTER_HOME,
            config.DAGSTER_PG_URL,
            config.STRIPE_SECRET_KEY,
            config.STRIPE_API_BASE,
            config.STRIPE_WEBHOOK_SECRET,
        }
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in unset and not k.startswith("BILLING_ALERTS_")
        }
        self.env[config.DATA_DIR] = str(data_dir)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "billing_pipeline.cli", "dev", "--no-seed"]
        argv += ["--dagster-port", str(self.port)]
        argv += ["--emulator-port", str(free_port()), "--webhook-port", str(free_port())]
        argv += ["--alerts-port", str(free_port())]
        self.process = subprocess.Popen(argv, env=self.env, start_new_session=True)
        return self.process

    def command(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """`billing-pipeline ARGV` typed in another terminal, in the demo's environment."""
        return subprocess.run(
            [sys.executable, "-m", "billing_pipeline.cli", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def graphql(self, query: str) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def wait_until_loaded(self) -> None:
        """Until the webserver answers and the code location has loaded without errors."""
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "billing-pipeline dev exited during startup"
            if not self.started_webserver():
                time.sleep(1)
                continue
            try:
                entries = self.graphql(LOCATION_QUERY)["data"]["workspaceOrError"]
            except OSError:
                time.sleep(1)
                continue
            locations = {e["name"]: e for e in entries["locationEntries"]}
            location = locations.get("billing_pipeline")
            if location and location["loadStatus"] == "LOADED":
                assert location["locationOrLoadError"]["__typename"] == "RepositoryLocation", (
                    location["locationOrLoadError"]
                )
                return
            time.sleep(1)
        pytest.fail("the Dagster webserver did not load the code location in time")

    def started_webserver(self) -> bool:
        """Whether the webserver is this supervisor's, not one left by a killed predecessor."""
        assert self.process is not None
        children = psutil.Process(self.process.pid).children()
        return any("dagster-webserver" in " ".join(_cmdline(child)) for child in children)

    def leftovers(self) -> list[str]:
        """Processes this demo started that still run: its Postgres, Dagster, anything else."""
        found = []
        if is_running(self.data_dir / "pgdata"):
            found.append("postgres")
        for process in psutil.process_iter(["pid", "cmdline"]):
            try:
                if process.pid == os.getpid():
                    continue
                environ = process.environ()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if environ.get(config.DATA_DIR) == str(self.data_dir):
                found.append(" ".join(process.info["cmdline"] or [])[:120])
        return found

    def wait_for_no_leftovers(self, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while (found := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return found


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    demo = Demo(tmp_path / "data")
    yield demo
    for process in psutil.process_iter():
        try:
            if process.environ().get(config.DATA_DIR) == str(demo.data_dir):
                os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        except (psutil.Error, ProcessLookupError):
            continue


def test_ctrl_c_stops_everything(demo: Demo) -> None:
    process = demo.start()
    demo.wait_until_loaded()

    # A second terminal with no Stripe or Dagster variable: the commands find the demo's
    # emulator and Dagster instance as they find its database.
    assert (demo.data_dir / config.DEV_SETTINGS_FILE).stat().st_mode & 0o077 == 0
    status = demo.command("status", "--stripe", "--days", "2")
    assert status.returncode == 0, status.stderr
    assert "not reconciled" not in status.stdout  # Stripe (the emulator) was asked
    assert "checks not read" not in status.stdout  # and Dagster's instance was read
    invoices = demo.command("stripe", "invoices")
    assert invoices.returncode == 0, invoices.stderr

    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does to the foreground process group
    assert process.wait(timeout=60) == 0
    assert demo.wait_for_no_leftovers() == []
    assert not (demo.data_dir / config.DEV_SETTINGS_FILE).exists()


def test_recovers_after_kill_9(demo: Demo) -> None:
    first = demo.start()
    demo.wait_until_loaded()
    first.kill()
    first.wait()
    assert demo.leftovers(), "a supervisor killed with -9 leaves its children running"

    second = demo.start()  # stops the first one's Dagster children, joins its Postgres
    demo.wait_until_loaded()
    os.kill(second.pid, signal.SIGTERM)
    assert second.wait(timeout=60) == 0
    assert demo.wait_for_no_leftovers() == []


def _cmdline(process: psutil.Process) -> list[str]:
    """A child's command line; empty for one that exited meanwhile (a finished migration step
    is a zombie until the supervisor reaps it)."""
    try:
        return process.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return []
