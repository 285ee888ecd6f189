"""Without a sink, loading the code location says so: the line is in the code server's log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from billing_demo.dev.dagster_processes import grpc_serving
from billing_pipeline import config
from billing_pipeline_tests.support.network import free_port

NO_SINK = (
    "billing alerts: no sink configured, failed runs and checks are only shown in the Dagster "
    "UI (set BILLING_ALERTS_SLACK_WEBHOOK_URL, BILLING_ALERTS_WEBHOOK_URL or "
    "BILLING_ALERTS_SMTP_URL)"
)


def code_server_log(tmp_path: Path, **settings: str) -> str:
    """Start the code location as production does (a gRPC code server), until it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_ALERTS_")}
    env |= {config.DATABASE_URL: "postgresql://nobody@127.0.0.1:1/none", **settings}
    port = free_port()
    log = tmp_path / "code-server.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "api", "grpc",
             "-m", "billing_pipeline.definitions", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not grpc_serving("127.0.0.1", port):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return log.read_text()


@pytest.mark.processes
def test_loading_the_code_location_without_a_sink_says_alerts_go_nowhere(tmp_path: Path) -> None:
    assert NO_SINK in code_server_log(tmp_path).splitlines()


@pytest.mark.processes
def test_with_a_sink_the_code_location_loads_without_that_line(tmp_path: Path) -> None:
    log = code_server_log(tmp_path, **{config.ALERTS_WEBHOOK_URL: "http://127.0.0.1:9/alerts"})
    assert "Started Dagster code server" in log
    assert NO_SINK not in log
