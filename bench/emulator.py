"""The Stripe emulator in its own process, so its request handling does not share our GIL.

In-process (as the tests run it) the emulator and the sender would take turns on one
interpreter lock and the benchmark would measure the sum of both; Stripe is another machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import stripe
from sqlalchemy import text

from billing_pipeline.db.engine import make_engine
from stripe_emulator.control import EmulatorControl

API_KEY = "sk_test_bench"
# Request threads of the gunicorn-served emulator: more than any benchmark keeps in flight.
GUNICORN_THREADS = 64
# Each running emulator's process id by URL, to read its CPU time (`cpu_seconds`).
_PIDS: dict[str, int] = {}


Server = Literal["werkzeug", "gunicorn"]


@contextmanager
def emulator_process(
    pythonpath: str | None = None,
    server: Server = "werkzeug",
    command: Sequence[str] | None = None,
) -> Iterator[str]:
    """Start the emulator in its own process; yield its base URL; stop it.

    `werkzeug`: `billing-pipeline stripe-emulator --port 0`, the server the tests and the demo
    use; `gunicorn`: the same app under gunicorn with keep-alive (`bench.emulator_gunicorn`).
    `pythonpath` puts another copy of `stripe_emulator` first (a baseline from an older commit);
    `command` runs another entry point that prints the same `STRIPE_API_BASE=` line.
    """
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
    if command is None:
        command = (
            ["-m", "billing_pipeline.cli", "stripe-emulator", "--port", "0"]
            if server == "werkzeug"
            else ["-m", "bench.emulator_gunicorn", "--threads", str(GUNICORN_THREADS)]
        )
    process = subprocess.Popen(
        [sys.executable, *command], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            if line.startswith("STRIPE_API_BASE="):
                url = line.strip().split("=", 1)[1]
                break
        if url is None:
            raise RuntimeError("the emulator exited before printing its URL")
        _PIDS[url] = process.pid
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def cpu_seconds(url: str) -> float:
    """User + system CPU time the emulator at `url` has used so far: its process and the live
    processes it started (gunicorn's worker), read from Linux's /proc."""
    root = _PIDS[url]
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" ", 1)
        except OSError:
            continue
        fields = rest.rsplit(")", 1)[1].split()
        if int(pid) == root or int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextmanager
def emulator_with_customers(db_url: str) -> Iterator[str]:
    """An emulator holding a customer for every subscription in `db_url`, which then bills it.

    The customers are created inside the emulator before it serves (`bench.seeded_emulator`),
    and the subscriptions are pointed at them in one statement; like `reporting.attach_customers`
    this sets what the webhook flow would (the customer and `active`), without its minutes of
    setup at 100,000 organizations.
    """
    engine = make_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        organizations = connection.execute(
            text("SELECT organization_id FROM subscriptions")
        ).scalars()
        wanted = "".join(f"{org}\n" for org in organizations)
    with tempfile.TemporaryDirectory(prefix="bench-customers-") as folder:
        orgs_file, customers_file = Path(folder) / "orgs", Path(folder) / "customers"
        orgs_file.write_text(wanted)
        command = ("-m", "bench.seeded_emulator", str(orgs_file), str(customers_file))
        with emulator_process(command=command) as url:
            pairs = [line.split("\t") for line in customers_file.read_text().splitlines()]
            with engine.begin() as connection:
                connection.execute(
                    text(
                        "UPDATE subscriptions s SET stripe_customer_id = m.customer, "
                        "status = 'active' FROM unnest(CAST(:orgs AS bigint[]), "
                        "CAST(:customers AS text[])) AS m(org, customer) "
                        "WHERE s.organization_id = m.org"
                    ),
                    {"orgs": [int(org) for org, _ in pairs], "customers": [c for _, c in pairs]},
                )
                # Every row changed: statistics as autovacuum would leave them (bench.month_end).
                connection.execute(text("ANALYZE subscriptions"))
            engine.dispose()
            yield url


def control(url: str) -> EmulatorControl:
    return EmulatorControl(url, timeout=120.0)


def sdk_client(url: str, key: str = API_KEY, retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(
        key,
        base_addresses={"api": url, "meter_events": url},
        max_network_retries=retries,
    )
