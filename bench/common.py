"""What every benchmark shares: a scratch database, statistics, machine facts, RESULTS.md.

Each benchmark gets its own database on the server in `DATABASE_URL` (or on a private embedded
cluster when it is unset), created at start and dropped at the end, so runs never see each
other's rows or the test suite's, and several engineers can share one server.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from billing_demo.seed.generator import SeedOptions
from billing_pipeline import config
from billing_pipeline.db import migrate
from billing_pipeline.db.embedded import EmbeddedPostgres
from billing_pipeline.db.engine import make_engine, render_url
from billing_pipeline_tests.support.databases import create_database, drop_database

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
RESULTS = BENCH_DIR / "RESULTS.md"


@contextmanager
def postgres_server() -> Iterator[str]:
    """The server in `DATABASE_URL`, or a throwaway embedded cluster when it is unset."""
    if url := config.env(config.DATABASE_URL):
        yield render_url(url)
        return
    with (
        tempfile.TemporaryDirectory(prefix="bench-pg-") as folder,
        EmbeddedPostgres(Path(folder) / "pgdata", delete_on_stop=True) as server,
    ):
        yield server.url


@contextmanager
def scratch_database(server_url: str, prefix: str, *, migrated: bool = True) -> Iterator[str]:
    """A fresh database (migrated to every head unless told otherwise), dropped afterwards."""
    url = create_database(server_url, prefix)
    try:
        if migrated:
            migrate.upgrade(url)
        yield url
    finally:
        drop_database(server_url, url)


@contextmanager
def cloned_database(server_url: str, template_url: str, prefix: str) -> Iterator[str]:
    """A copy of `template_url` (PostgreSQL's `CREATE DATABASE ... TEMPLATE`), dropped afterwards.

    Seeding 100,000 organizations once and copying the files per run is seconds where seeding
    again is minutes, and every run starts from identical source rows and an empty ledger. The
    template must have no open connections.
    """
    url = create_database(server_url, prefix)
    name, template = make_url(url).database, make_url(template_url).database
    admin = make_engine(server_url, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin.dispose()
    try:
        yield url
    finally:
        drop_database(server_url, url)


@dataclass(frozen=True)
class Stats:
    """Median, min and max of repeated measurements: with 2 shared cores, one figure lies."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        return cls(statistics.median(values), min(values), max(values), len(values))

    def show(self, fmt: str = "{:.2f}") -> str:
        if self.n == 1:
            return fmt.format(self.median)
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}-{fmt.format(self.high)})"

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def billed_seed(organizations: int, days: int) -> SeedOptions:
    """The demo's seed with every organization paying, 2 sensors and 2 readings a sensor-day:
    what is reported is per organization, not per reading, so readings are kept few."""
    return SeedOptions(
        organizations=organizations,
        sensors_per_org=2,
        days=days,
        readings_per_sensor_per_day=2,
        paid_fraction=1.0,
    )


@dataclass(frozen=True)
class LedgerOutcome:
    """What a benchmark run left in the ledger, to compare with what the emulator holds."""

    statuses: Counter[str]
    sent: set[str]
    leased: int


def ledger_outcome(db_url: str) -> LedgerOutcome:
    """The ledger's rows per status, the identifiers recorded sent and the rows still leased."""
    engine = make_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        statuses: Counter[str] = Counter(
            dict(
                connection.execute(
                    text("SELECT status, count(*) FROM billing.meter_ledger GROUP BY status")
                ).all()
            )
        )
        sent = set(
            connection.execute(
                text("SELECT identifier FROM billing.meter_ledger WHERE status = 'sent'")
            ).scalars()
        )
        leased = connection.execute(
            text("SELECT count(*) FROM billing.meter_ledger WHERE lease_owner IS NOT NULL")
        ).scalar_one()
    engine.dispose()
    return LedgerOutcome(statuses, sent, int(leased))


def peak_rss_mib() -> float:
    """This process's peak resident set size, in MiB.

    Linux's `VmHWM` (/proc/self/status) is the peak of this process image only. `ru_maxrss` is
    not, in a worker started by `subprocess`: it keeps the high-water mark of the parent's
    memory copied at fork, so a worker launched by a benchmark that had grown to 550 MiB
    reported 550 MiB while never holding more than 165 MiB itself (bench.month_end found this).
    ru_maxrss (KiB on Linux) is the fallback where /proc is missing.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, "no VmHWM in /proc/self/status"
    return int(match.group(1)) / 1024


def run_worker(module: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m module --worker ...` in a fresh process and return the JSON it prints last.

    A process per measurement keeps peak-memory figures apart: ru_maxrss never goes down.
    """
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if completed.returncode != 0:
        raise RuntimeError(f"worker {module} {args} failed:\n{completed.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def machine_facts(server_url: str) -> dict[str, str]:
    """Where the figures came from; numbers without a machine are not reproducible."""
    engine = make_engine(server_url, pool_size=1)
    with engine.connect() as connection:
        settings = {
            name: connection.execute(text(f"SHOW {name}")).scalar_one()
            for name in ("server_version", "max_connections", "shared_buffers", "work_mem")
        }
    engine.dispose()
    meminfo = Path("/proc/meminfo").read_text()
    match = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    memory_gib = int(match.group(1)) / 1024 / 1024 if match else float("nan")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{os.cpu_count()} x {cpu}",
        "memory": f"{memory_gib:.1f} GiB",
        "python": platform.python_version(),
        "postgresql": (
            f"{settings['server_version'].split()[0]} (max_connections "
            f"{settings['max_connections']}, shared_buffers {settings['shared_buffers']}, "
            f"work_mem {settings['work_mem']})"
        ),
        "os": platform.platform(),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table, which is also readable on a terminal."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def record(name: str, data: dict[str, Any], section: str, *, quick: bool) -> None:
    """Keep the raw figures in bench/out/ and, for full runs, rewrite this benchmark's section
    of RESULTS.md (between markers, so benchmarks can be rerun one at a time)."""
    OUT_DIR.mkdir(exist_ok=True)
    suffix = "-quick" if quick else ""
    (OUT_DIR / f"{name}{suffix}.json").write_text(json.dumps(data, indent=2, default=str))
    print(section)
    if quick:
        print("(--quick: RESULTS.md left unchanged)")
        return
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{section.strip()}\n{end}"
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    updated = (
        pattern.sub(lambda _: block, current)
        if pattern.search(current)
        else current.rstrip() + "\n\n" + block + "\n"
    )
    RESULTS.write_text(updated)
    print(f"recorded in {RESULTS.relative_to(BENCH_DIR.parent)}")


def facts_lines(facts: dict[str, str]) -> str:
    return "; ".join(f"{key}: {value}" for key, value in facts.items())


def step_windows(instance: Any, run_id: str) -> dict[str, tuple[float, float]]:
    """Each step's (start, end) from the run's event log: STEP_START to its STEP_SUCCESS or
    STEP_FAILURE entry. (The STEP_SUCCESS event's own `duration_ms` covers less than the step's
    wall time.)"""
    started: dict[str, float] = {}
    windows: dict[str, tuple[float, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            windows[event.step_key] = (started[event.step_key], entry.timestamp)
    return windows
