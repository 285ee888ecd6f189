"""Dagster's production topology on one machine: a gRPC code server, a webserver and a daemon.

Each is its own process in its own session (so stopping a group also stops the run workers the
code server spawns), logging to a file the test prints when something does not come up. The
webserver and the daemon only reach the code location over gRPC, as in the Helm chart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from billing_demo.dev.dagster_processes import free_port, grpc_serving, write_grpc_workspace
from billing_demo.dev.services import answers, script, stop_process_groups
from billing_pipeline import config
from billing_pipeline_tests.support.stripe import TEST_KEY

LOCATION = "billing_pipeline"


STARTUP_TIMEOUT = 120.0
RUN_TIMEOUT = 120.0
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def topology_env(
    database_url: str, dagster_home: Path, dagster_pg_url: str, api_base: str | None, **extra: str
) -> dict[str, str]:
    """The processes' environment: this one without its Stripe and Dagster settings, then the
    test's database, instance and (when `api_base` is given) the emulator, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DAGSTER_"))}
    env |= {
        config.DATABASE_URL: database_url,
        config.DAGSTER_HOME: str(dagster_home),
        config.DAGSTER_PG_URL: dagster_pg_url,
    }
    if api_base is not None:
        env |= {config.STRIPE_SECRET_KEY: TEST_KEY, config.STRIPE_API_BASE: api_base}
    return env | extra


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} (exit {self.process.poll()}) ---\n" + "\n".join(text)


def _start(name: str, argv: Sequence[str], env: Mapping[str, str], logs: Path) -> Started:
    log = logs / f"{name}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Started(name, process, log)


def _wait(what: str, ready: Callable[[], bool], started: Sequence[Started]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready():
        died = [s for s in started if s.process.poll() is not None]
        if died or time.monotonic() > deadline:
            logs = "\n".join(s.tail() for s in started)
            raise AssertionError(f"{what} did not come up\n{logs}")
        time.sleep(0.5)


@dataclass
class Topology:
    webserver_url: str
    processes: list[Started]

    def pids(self) -> set[int]:
        return {s.process.pid for s in self.processes}

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.webserver_url}/graphql",
            data=json.dumps({"query": query, "variables": dict(variables or {})}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def logs(self) -> str:
        return "\n".join(s.tail() for s in self.processes)

    def launch(self, job_name: str, tags: Mapping[str, str]) -> Any:
        """Submit a run of `job_name` to the webserver, as the UI's Launch button does; the
        GraphQL answer (`LaunchRunSuccess` with the queued run, or the error)."""
        params = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "jobName": job_name,
            },
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        return self.graphql(LAUNCH, {"params": params})["data"]["launchRun"]

    def wait_for_run(self, instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
        """The run once finished (any status); fails with the processes' logs after a while."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.is_finished:
                return run
            time.sleep(1)
        raise AssertionError(f"run {run_id} did not finish in time\n{self.logs()}")


@contextmanager
def production_topology(dagster_home: Path, env: Mapping[str, str]) -> Iterator[Topology]:
    """Start the three processes on `dagster_home` (which holds the dagster.yaml) and `env`.

    The code server starts first, since the webserver and daemon load the workspace from it; the
    yielded topology is ready once the webserver answers; the daemon takes queued runs from then on.
    """
    host = "127.0.0.1"
    grpc_port, web_port = free_port(), free_port()
    workspace = write_grpc_workspace(dagster_home / "workspace.yaml", grpc_port, host)
    # Not `logs`: Dagster keeps its telemetry queue there and empties it.
    logs = dagster_home / "process-logs"
    logs.mkdir(exist_ok=True)
    started: list[Started] = []
    with ExitStack() as stack:
        stack.callback(
            lambda: stop_process_groups(
                [s.process.pid for s in started],
                reap=lambda: [s.process.poll() for s in started],
            )
        )
        code_server = [
            sys.executable, "-m", "dagster", "api", "grpc",
            "-m", "billing_pipeline.definitions", "--location-name", LOCATION,
            "--host", host, "--port", str(grpc_port),
        ]  # fmt: skip
        started.append(_start("code-server", code_server, env, logs))
        _wait("the gRPC code server", lambda: grpc_serving(host, grpc_port), started)
        webserver = [script("dagster-webserver"), "-w", str(workspace), "-h", host]
        started.append(_start("webserver", [*webserver, "-p", str(web_port)], env, logs))
        daemon = [script("dagster-daemon"), "run", "-w", str(workspace)]
        started.append(_start("daemon", daemon, env, logs))
        url = f"http://{host}:{web_port}"
        _wait("the webserver", lambda: answers(f"{url}/server_info"), started)
        yield Topology(url, started)
