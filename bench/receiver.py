"""Benchmark 3: the webhook receiver under sustained signed deliveries.

    python -m bench.receiver [--quick] [--seconds 20] [--repeats 3] [--workers 4] [--threads 8]
                             [--processes 2] [--connections 32]

The receiver runs as production runs it, `gunicorn --workers 4 --threads 8` (README), against a
scratch database. A load generator (`--processes` processes, `--connections` keep-alive
connections in all, each a thread with `http.client`) posts pre-built, pre-signed
`invoice.paid` events with unique ids for a bounded time to 127.0.0.1 only. Latency is measured
per request by the client, so on two cores it includes the load generator's own scheduling
(it competes with gunicorn and PostgreSQL for the same CPUs).

Afterwards every acknowledged (2xx) event id must be in `billing.webhook_inbox` exactly once.
Baseline: the same Flask app on Flask's threaded development server (`billing-pipeline webhooks
serve`, one process), which is what a team runs when it skips gunicorn.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.common import (
    Stats,
    facts_lines,
    machine_facts,
    postgres_server,
    record,
    scratch_database,
    table,
)
from billing_pipeline.db.engine import make_engine
from stripe_emulator.webhook_events import TriggerOptions, build_event
from stripe_emulator.webhooks import generate_webhook_secret, signature_header

PATH = "/webhooks/stripe"
ID_MARK = "evt_BENCHMARKPLACEHOLDER"
MAX_RATE_PER_PROCESS = 3_000
WSGI_APPS = {
    "gunicorn": "billing_pipeline.webhooks.wsgi:app",
    # The same app without the pool's pre-ping: the fix the profile suggests (see its module).
    "gunicorn-noping": "bench.wsgi_no_preping:app",
}
SERVERS = (*WSGI_APPS, "dev")  # bodies pre-signed per process per second of the run


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(kind: str, db_url: str, secret: str, workers: int, threads: int) -> Iterator[int]:
    """Start the receiver (`gunicorn` or Flask's `dev` server) and wait until it answers."""
    port = _free_port()
    if kind in WSGI_APPS:
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            *("--workers", str(workers), "--threads", str(threads)),
            *("--bind", f"127.0.0.1:{port}", "--timeout", "30"),
            WSGI_APPS[kind],
        ]
    else:
        command = [sys.executable, "-m", "billing_pipeline.cli", "webhooks", "serve"]
        command += ["--port", str(port)]
    env = {**os.environ, "DATABASE_URL": db_url, "STRIPE_WEBHOOK_SECRET": secret}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{kind} receiver did not start") from None
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _bodies(secret: str, tag: str, count: int) -> list[tuple[str, bytes, str]]:
    """(event id, raw body, Stripe-Signature), built from one event with its id swapped in:
    signing is a few microseconds, building Stripe-shaped events is not, and neither belongs in
    the timed loop."""
    template = json.dumps(
        build_event("invoice.paid", TriggerOptions(organization_id=1)) | {"id": ID_MARK},
        indent=2,
    )
    now = int(time.time())
    bodies = []
    for i in range(count):
        event_id = f"evt_bench{tag}x{i:08d}"
        raw = template.replace(ID_MARK, event_id).encode()
        bodies.append((event_id, raw, signature_header(raw, secret, now)))
    return bodies


def _load_process(
    port: int, secret: str, tag: str, connections: int, seconds: float, out: Any
) -> None:
    """One load-generating process: `connections` threads, each with a keep-alive connection."""
    bodies = _bodies(secret, tag, int(seconds * MAX_RATE_PER_PROCESS))
    counter = itertools.count()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    acked: list[str] = []
    lock = threading.Lock()
    start_at = time.monotonic() + 0.5
    stop_at = start_at + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        my_acked: list[str] = []
        my_statuses: Counter[str] = Counter()
        time.sleep(max(0.0, start_at - time.monotonic()))
        while time.monotonic() < stop_at:
            i = next(counter)
            if i >= len(bodies):
                my_statuses["generator ran out of bodies"] += 1
                break
            event_id, raw, signature = bodies[i]
            began = time.perf_counter()
            try:
                connection.request(
                    "POST",
                    PATH,
                    body=raw,
                    headers={"Content-Type": "application/json", "Stripe-Signature": signature},
                )
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as error:
                status = type(error).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - began)
            my_statuses[status] += 1
            if status.startswith("2"):
                my_acked.append(event_id)
        with lock:
            latencies.extend(mine)
            acked.extend(my_acked)
            statuses.update(my_statuses)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put({"latencies": latencies, "acked": acked, "statuses": dict(statuses)})


def drive(port: int, secret: str, processes: int, connections: int, seconds: float) -> dict:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    per_process = max(1, connections // processes)
    workers = [
        context.Process(
            target=_load_process, args=(port, secret, str(p), per_process, seconds, queue)
        )
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    parts = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    latencies = sorted(x for part in parts for x in part["latencies"])
    statuses: Counter[str] = Counter()
    for part in parts:
        statuses.update(part["statuses"])
    return {
        "acked": [event_id for part in parts for event_id in part["acked"]],
        "latencies": latencies,
        "statuses": dict(statuses),
        "connections": per_process * processes,
    }


def _inbox_check(db_url: str, acked: list[str]) -> dict[str, int]:
    engine = make_engine(db_url, pool_size=1)
    with engine.begin() as connection:
        stored: Counter[str] = Counter(
            dict(
                connection.execute(
                    text("SELECT event_id, count(*) FROM billing.webhook_inbox GROUP BY event_id")
                ).all()
            )
        )
        connection.execute(text("TRUNCATE billing.webhook_inbox"))
    engine.dispose()
    acked_set = set(acked)
    return {
        "acked": len(acked),
        "acked_missing": sum(1 for event_id in acked_set if stored[event_id] == 0),
        "stored_more_than_once": sum(1 for n in stored.values() if n > 1),
        "stored_not_acked": sum(1 for event_id in stored if event_id not in acked_set),
    }


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def measure_once(
    kind: str, db_url: str, connections: int, args: argparse.Namespace
) -> dict[str, Any]:
    secret = generate_webhook_secret()
    with serve(kind, db_url, secret, args.workers, args.threads) as port:
        load = drive(port, secret, args.processes, connections, args.seconds)
    latencies = load["latencies"]
    checks = _inbox_check(db_url, load["acked"])
    return {
        "server": kind,
        "deliveries_per_second": len(load["acked"]) / args.seconds,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * _percentile(latencies, 0.99) if latencies else float("nan"),
        "statuses": load["statuses"],
        "connections": load["connections"],
        **checks,
    }


def _section(results: dict[str, list[dict[str, Any]]], facts: dict[str, str], args: Any) -> str:
    labels = {
        "gunicorn": f"gunicorn --workers {args.workers} --threads {args.threads}",
        "gunicorn-noping": "same, engine without pool_pre_ping (proposed fix)",
        "dev": "Flask dev server (threaded, 1 process)",
    }
    rows = []
    for key, runs in results.items():
        kind, connections = key.split("@")
        statuses: Counter[str] = Counter()
        for run in runs:
            statuses.update(run["statuses"])
        rows.append(
            [
                labels[kind],
                connections,
                Stats.of([r["deliveries_per_second"] for r in runs]).show("{:.0f}"),
                Stats.of([r["p50_ms"] for r in runs]).show("{:.1f}"),
                Stats.of([r["p99_ms"] for r in runs]).show("{:.1f}"),
                f"{sum(r['acked'] for r in runs):,}",
                f"{sum(r['acked_missing'] for r in runs)} / "
                f"{sum(r['stored_more_than_once'] for r in runs)}",
                ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items())),
            ]
        )
    ratios = []
    for connections in sorted({key.split("@")[1] for key in results}, key=int):
        gunicorn = results.get(f"gunicorn@{connections}")
        dev = results.get(f"dev@{connections}")
        if gunicorn and dev:
            g = Stats.of([r["deliveries_per_second"] for r in gunicorn]).median
            d = Stats.of([r["deliveries_per_second"] for r in dev]).median
            ratios.append(f"{g / d:.1f}x at {connections} connections")
    return "\n".join(
        [
            "## 3. Receiver: signed deliveries under gunicorn",
            "",
            f"Machine: {facts_lines(facts)}",
            "",
            f"`python -m bench.receiver` - {args.repeats} runs of {args.seconds:.0f} s per "
            f"server and connection count; keep-alive connections from {args.processes} load "
            "processes (threads + http.client) to 127.0.0.1; every body unique and signed "
            "before the clock starts; median (min-max). On 2 cores the load generator, gunicorn "
            "and PostgreSQL share the CPUs, so these are lower bounds for a receiver with a "
            "machine of its own; latency is client-side and includes the generator's own "
            "scheduling. Missing = acknowledged ids absent from the inbox; twice = event ids "
            "stored more than once.",
            "",
            table(
                [
                    "server",
                    "connections",
                    "deliveries/s",
                    "p50 ms",
                    "p99 ms",
                    "acknowledged",
                    "missing / twice",
                    "answers",
                ],
                rows,
            ),
            "",
            f"gunicorn / dev server throughput: {', '.join(ratios)}.",
        ]
    )


def render(data: dict[str, Any]) -> str:
    """The RESULTS.md section for the JSON a full run wrote."""
    return _section(data["results"], data["facts"], argparse.Namespace(**data["args"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s, 1 run")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--connections", default="16,32", help="comma-separated connection counts to measure"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeats = 3.0, 1
    counts = [int(c) for c in str(args.connections).split(",")]
    results: dict[str, list[dict[str, Any]]] = {
        f"{kind}@{c}": [] for c in counts for kind in SERVERS
    }
    with postgres_server() as server, scratch_database(server, "bench_receiver") as db_url:
        facts = machine_facts(server)
        for _ in range(args.repeats):
            for key in results:
                kind, connections = key.split("@")
                run = measure_once(kind, db_url, int(connections), args)
                results[key].append(run)
                print(
                    f"{key}: {run['deliveries_per_second']:.0f}/s p50 {run['p50_ms']:.1f} ms "
                    f"p99 {run['p99_ms']:.1f} ms missing {run['acked_missing']} "
                    f"twice {run['stored_more_than_once']} {run['statuses']}",
                    flush=True,
                )
    record(
        "receiver",
        {"facts": facts, "args": vars(args), "results": results},
        _section(results, facts, args),
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
