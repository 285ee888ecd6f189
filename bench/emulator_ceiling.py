"""Benchmark 5: the Stripe emulator alone, v1 meter events against the v2 meter event stream.

    python -m bench.emulator_ceiling [--quick] [--repeats 3] [--seconds 8] [--profile]
        [--profile-http] [--server gunicorn|werkzeug] [--baseline-ref COMMIT]
        [--baseline-server werkzeug|gunicorn]

The emulator is the yardstick of every reporting figure, so its own ceiling on this machine is
measured with as little client work as possible: pre-built request bodies over `http.client`
connections (no SDK, no database), the emulator in its own process, no latency, no rate limit.
`--server gunicorn` (default) serves the emulator's app under gunicorn with keep-alive
(`bench.emulator_gunicorn`); `werkzeug` is `billing-pipeline stripe-emulator --port 0`, whose
server closes every connection after its response.

- `v1`: one event per `POST /v1/billing/meter_events` (form-encoded, API key), 16 connections;
  each connection has its own customers, so Stripe's one-call-per-customer-and-meter rule
  never answers 429;
- `v2`: `POST /v2/billing/meter_event_stream` (JSON, session token from
  `/v2/billing/meter_event_session`), 100 events a request, 4 requests in flight.

Each repeat runs v1 then v2 for `--seconds` each (alternating, so load from elsewhere hits
both); events/s counts events in 200 answers, and the emulator process's CPU time per event is
read from /proc; the emulator's own count of stored events is checked against it at the end.
`--baseline-ref` also runs `stripe_emulator/` as it was at an older commit (a `git archive` put
first on PYTHONPATH) in a second process, alternating with this one, to measure an emulator
change within one run; `--baseline-server` alone runs this commit's emulator under the other
server. `--profile` runs the v2 path in this process through the Flask test client under
cProfile (no HTTP server, one thread); `--profile-http` runs it over werkzeug's server in this
process with a CPU-clock cProfile per connection thread; both print the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import json
import os
import pstats
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import stripe

from bench.common import Stats, record, table
from bench.emulator import API_KEY, Server, control, cpu_seconds, emulator_process, sdk_client
from stripe_emulator.clock import iso8601

V1_CONNECTIONS = 16
# The SDK driver's threads (bench.reporting's yardstick for a v1 client that pays the SDK's own
# cost); each needs customers of its own, so `_setup` must be given at least this many.
V1_SDK_THREADS = 32
V2_IN_FLIGHT = 4
# The SDK driver's v2 threads: as many requests in flight as the pipeline's v2 sender default.
V2_SDK_THREADS = 8
V2_BATCH = 100
CUSTOMERS_PER_CONNECTION = 8
EVENT_NAME = "bench_ceiling"


def _setup(url: str, connections: int) -> list[list[str]]:
    """One sum meter and a few customers per connection."""
    client = sdk_client(url)
    client.v1.billing.meters.create(
        {
            "display_name": "bench ceiling",
            "event_name": EVENT_NAME,
            "default_aggregation": {"formula": "sum"},
        }
    )
    return [
        [client.v1.customers.create().id for _ in range(CUSTOMERS_PER_CONNECTION)]
        for _ in range(connections)
    ]


class _Load:
    """Threads posting pre-built bodies for a fixed time; counts events answered 200."""

    def __init__(self, url: str, seconds: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.events = 0
        self.statuses: dict[int, int] = {}

    def run(self, workers: list[threading.Thread]) -> float:
        began = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.perf_counter() - began

    def post(self, path: str, headers: dict[str, str], bodies: Any, per_request: int) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        events = 0
        statuses: dict[int, int] = {}
        while time.monotonic() < self.deadline:
            connection.request("POST", path, body=next(bodies), headers=headers)
            response = connection.getresponse()
            response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status == 200:
                events += per_request
        connection.close()
        with self.lock:
            self.events += events
            for status, n in statuses.items():
                self.statuses[status] = self.statuses.get(status, 0) + n


def _bodies(make: Any) -> Any:
    n = 0
    while True:
        yield make(n)
        n += 1


def run_v1(url: str, customers: list[list[str]], seconds: float, tag: str) -> dict[str, Any]:
    load = _Load(url, seconds)
    ts = str(int(datetime.now(UTC).timestamp()) - 3600)
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/x-www-form-urlencoded",
    }

    def body_for(mine: list[str], worker: int) -> Any:
        return lambda n: urlencode(
            {
                "event_name": EVENT_NAME,
                "identifier": f"v1-{tag}-{worker}-{n}",
                "timestamp": ts,
                "payload[stripe_customer_id]": mine[n % len(mine)],
                "payload[value]": "1",
            }
        ).encode()

    workers = [
        threading.Thread(
            target=load.post,
            args=("/v1/billing/meter_events", headers, _bodies(body_for(mine, i)), 1),
        )
        for i, mine in enumerate(customers[:V1_CONNECTIONS])
    ]
    seconds_taken = load.run(workers)
    return {"events": load.events, "seconds": seconds_taken, "statuses": load.statuses}


def run_v1_sdk(url: str, customers: list[list[str]], seconds: float, tag: str) -> dict[str, Any]:
    """v1 through the official SDK from `V1_SDK_THREADS` threads, no database: the client work
    the pipeline's v1 sender also does, without its ledger. Each thread has its own customers."""
    client = sdk_client(url)
    ts = int(datetime.now(UTC).timestamp()) - 3600

    def call(w: int, mine: list[str], n: int) -> int:
        client.v1.billing.meter_events.create(
            {
                "event_name": EVENT_NAME,
                "identifier": f"sdk-{tag}-{w}-{n}",
                "timestamp": ts,
                "payload": {"stripe_customer_id": mine[n % len(mine)], "value": "1"},
            }
        )
        return 1

    return _sdk_threads(call, customers, V1_SDK_THREADS, seconds)


def run_v2_sdk(url: str, customers: list[list[str]], seconds: float, tag: str) -> dict[str, Any]:
    """The v2 stream through the official SDK (`v2.billing.meter_event_stream.create` with the
    session token), 100 events a request from `V2_SDK_THREADS` threads, no database: what the
    pipeline's v2 sender pays the SDK per request, without its ledger."""
    client = sdk_client(url)
    token = client.v2.billing.meter_event_session.create().authentication_token
    ts = iso8601(int(datetime.now(UTC).timestamp()) - 3600)

    def call(w: int, mine: list[str], n: int) -> int:
        events: list[Any] = [
            {
                "event_name": EVENT_NAME,
                "identifier": f"sdk2-{tag}-{w}-{n}-{i}",
                "timestamp": ts,
                "payload": {"stripe_customer_id": mine[i % len(mine)], "value": "1"},
            }
            for i in range(V2_BATCH)
        ]
        client.v2.billing.meter_event_stream.create({"events": events}, {"api_key": token})
        return V2_BATCH

    return _sdk_threads(call, customers, V2_SDK_THREADS, seconds)


def _sdk_threads(
    call: Callable[[int, list[str], int], int],
    customers: list[list[str]],
    threads: int,
    seconds: float,
) -> dict[str, Any]:
    """Run `call(worker, its customers, n)` (events sent) in `threads` threads until the
    deadline; events in answered calls, and how many calls raised."""
    if len(customers) < threads:
        raise ValueError(f"{threads} SDK threads need as many customer sets, got {len(customers)}")
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    totals: dict[str, Any] = {"events": 0, "statuses": {}}

    def worker(w: int) -> None:
        ok, failed, n = 0, 0, 0
        while time.monotonic() < deadline:
            try:
                ok += call(w, customers[w], n)
            except stripe.StripeError:
                failed += 1
            n += 1
        with lock:
            totals["events"] += ok
            totals["statuses"][200] = totals["statuses"].get(200, 0) + ok
            if failed:
                totals["statuses"]["error"] = totals["statuses"].get("error", 0) + failed

    began = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return {**totals, "seconds": time.perf_counter() - began}


def stream_body(customers: list[str], tag: str, n: int) -> bytes:
    ts = iso8601(int(datetime.now(UTC).timestamp()) - 3600)
    return json.dumps(
        {
            "events": [
                {
                    "event_name": EVENT_NAME,
                    "identifier": f"v2-{tag}-{n}-{i}",
                    "timestamp": ts,
                    "payload": {"stripe_customer_id": customers[i % len(customers)], "value": "1"},
                }
                for i in range(V2_BATCH)
            ]
        }
    ).encode()


def run_v2(url: str, customers: list[list[str]], seconds: float, tag: str) -> dict[str, Any]:
    token = sdk_client(url).v2.billing.meter_event_session.create().authentication_token
    load = _Load(url, seconds)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    everyone = [c for mine in customers for c in mine]
    workers = [
        threading.Thread(
            target=load.post,
            args=(
                "/v2/billing/meter_event_stream",
                headers,
                _bodies(lambda n, w=w: stream_body(everyone, f"{tag}-{w}", n)),
                V2_BATCH,
            ),
        )
        for w in range(V2_IN_FLIGHT)
    ]
    seconds_taken = load.run(workers)
    return {"events": load.events, "seconds": seconds_taken, "statuses": load.statuses}


def profile_v2(requests: int) -> str:
    """The v2 path through the Flask test client under cProfile: where the emulator's time goes
    without the HTTP server (werkzeug's threaded server adds its own per-request cost)."""
    from stripe_emulator.server import StripeEmulator

    emulator = StripeEmulator().start()
    try:
        customers = _setup(emulator.url, 4)
        everyone = [c for mine in customers for c in mine]
        app: Any = emulator._server.app  # type: ignore[union-attr]
        client = app.test_client()
        token = sdk_client(emulator.url).v2.billing.meter_event_session.create()
        headers = {"Authorization": f"Bearer {token.authentication_token}"}
        bodies = [stream_body(everyone, "profile", n) for n in range(requests)]
        profiler = cProfile.Profile()
        began = time.perf_counter()
        profiler.enable()
        for body in bodies:
            answer = client.post(
                "/v2/billing/meter_event_stream",
                data=body,
                headers=headers,
                content_type="application/json",
            )
            assert answer.status_code == 200, answer.data
        profiler.disable()
        seconds = time.perf_counter() - began
    finally:
        emulator.stop()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
    rate = requests * V2_BATCH / seconds
    return f"{requests} requests, {rate:.0f} events/s under cProfile\n{out.getvalue()}"


def profile_v2_http(seconds: float) -> str:
    """The v2 path over HTTP through the emulator's own werkzeug server, in this process: each
    connection's handler thread runs under its own cProfile (cProfile sees only the thread it
    is enabled in), timed by the thread's CPU clock, and the profiles are added up. The load
    threads share this interpreter, so the rate is below the separate-process ceiling; the
    shares are the emulator's."""
    from stripe_emulator import server

    profiles: list[cProfile.Profile] = []

    class ProfiledHandler(server._QuietHandler):
        def handle(self) -> None:
            # The thread's own CPU time, so time spent waiting for the interpreter lock (the
            # load threads run here too) is not counted.
            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
            try:
                super().handle()
            finally:
                profiler.disable()
                profiles.append(profiler)

    original = server._QuietHandler
    server._QuietHandler = ProfiledHandler  # type: ignore[misc]
    try:
        emulator = server.StripeEmulator().start()
    finally:
        server._QuietHandler = original  # type: ignore[misc]
    try:
        customers = _setup(emulator.url, V1_CONNECTIONS)
        sample = run_v2(emulator.url, customers, seconds, "profile")
    finally:
        emulator.stop()
    out = io.StringIO()
    stats = pstats.Stats(profiles[0], stream=out)
    for profile in profiles[1:]:
        stats.add(profile)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(30)
    rate = sample["events"] / sample["seconds"]
    return f"{sample['events']:,} events, {rate:.0f} events/s under cProfile\n{out.getvalue()}"


@contextmanager
def baseline_copy(ref: str) -> Iterator[str]:
    """`stripe_emulator/` as it was at `ref`, in a temporary folder to put first on PYTHONPATH."""
    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as folder:
        archive = subprocess.run(
            ["git", "archive", ref, "stripe_emulator"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        yield folder


def measure(
    repeats: int,
    seconds: float,
    server: Server,
    baseline: str | None,
    baseline_server: Server | None,
    log: Any,
) -> dict[str, Any]:
    """Each repeat: v1 then v2 on the current emulator, then the same on the baseline's.

    The baseline is `stripe_emulator/` at `baseline` (a commit), or this commit's, served by
    `baseline_server` (the server one); without either, there is none.
    """
    has_baseline = baseline is not None or baseline_server is not None
    names = ["current", *(["baseline"] if has_baseline else [])]
    results: dict[str, Any] = {name: {"v1": [], "v2": []} for name in names}
    results["server"] = server
    results["baseline_ref"] = baseline
    results["baseline_server"] = baseline_server or server
    with ExitStack() as stack:
        urls = {"current": stack.enter_context(emulator_process(server=server))}
        if has_baseline:
            folder = stack.enter_context(baseline_copy(baseline)) if baseline else None
            urls["baseline"] = stack.enter_context(
                emulator_process(folder, server=baseline_server or server)
            )
        customers = {}
        for name, url in urls.items():
            control(url).set_faults(latency_ms=0)
            control(url).set_rate_limit(None)
            customers[name] = _setup(url, V1_CONNECTIONS)
        for repeat in range(repeats):
            for name, url in urls.items():
                for path, run in (("v1", run_v1), ("v2", run_v2)):
                    cpu = cpu_seconds(url)
                    sample = run(url, customers[name], seconds, str(repeat))
                    sample["emulator_cpu"] = cpu_seconds(url) - cpu
                    log(
                        f"repeat {repeat}: {name} {path} {_rate(sample):.0f} events/s, emulator "
                        f"CPU {_cpu_us(sample):.0f} us an event {sample['statuses']}"
                    )
                    results[name][path].append(sample)
        for name, url in urls.items():
            held = len(control(url).meter_events())
            answered = sum(r["events"] for r in (*results[name]["v1"], *results[name]["v2"]))
            results[name]["held"], results[name]["answered"] = held, answered
    return results


def _rate(sample: dict[str, Any], per_request: int = 1) -> float:
    return float(sample["events"]) / per_request / float(sample["seconds"])


def _cpu_us(sample: dict[str, Any]) -> float:
    """The emulator's CPU microseconds per event answered: less sensitive than events/s to
    what else runs on the shared cores."""
    return float(sample["emulator_cpu"]) * 1e6 / max(1, int(sample["events"]))


def _ratio(top: list[dict[str, Any]], bottom: list[dict[str, Any]]) -> Stats:
    return Stats.of([_rate(a) / _rate(b) for a, b in zip(top, bottom, strict=True)])


def _cpu_ratio(top: list[dict[str, Any]], bottom: list[dict[str, Any]]) -> Stats:
    return Stats.of([_cpu_us(a) / _cpu_us(b) for a, b in zip(top, bottom, strict=True)])


def _label(results: dict[str, Any], name: str) -> str:
    if name == "current":
        return f"this commit, {results['server']}"
    ref = results.get("baseline_ref")
    return f"{f'baseline `{ref}`' if ref else 'this commit'}, {results['baseline_server']}"


def section(results: dict[str, Any], repeats: int, seconds: float) -> str:
    names = [n for n in ("current", "baseline") if n in results]
    rows = []
    for name in names:
        for path, flight, per in (("v1", V1_CONNECTIONS, 1), ("v2", V2_IN_FLIGHT, V2_BATCH)):
            samples = results[name][path]
            rows.append(
                (
                    _label(results, name),
                    "v1 `/v1/billing/meter_events`"
                    if path == "v1"
                    else f"v2 `/v2/billing/meter_event_stream`, {V2_BATCH} a request",
                    flight,
                    Stats.of([_rate(r) for r in samples]).show("{:.0f}"),
                    Stats.of([_rate(r, per) for r in samples]).show("{:.0f}"),
                    Stats.of([_cpu_us(r) for r in samples]).show("{:.0f}"),
                )
            )
    current = results["current"]
    lines = [
        "## 5. The emulator alone: v1 meter events against the v2 stream",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {os.cpu_count()} CPUs shared with other "
        "sessions. "
        f"`python -m bench.emulator_ceiling` — {repeats} repeats of {seconds:.0f} s per path and "
        "emulator, alternating, pre-built bodies over `http.client` connections (kept alive "
        "where the server allows: gunicorn does, werkzeug closes each one), no SDK, no "
        "database, each emulator in its own process, no latency, no limit; median (min-max). "
        "Emulator CPU: its process's (and gunicorn worker's) CPU time per event answered. "
        "Ratios are taken within each repeat.",
        "",
        table(
            ("emulator", "path", "in flight", "events/s", "requests/s", "emulator CPU us/event"),
            rows,
        ),
        "",
        "This commit, v2 / v1 events per second: "
        f"{_ratio(current['v2'], current['v1']).show('{:.1f}')}x.",
    ]
    if "baseline" in results:
        other = results["baseline"]
        lines.append(
            f"{_label(results, 'current')} / {_label(results, 'baseline')}: events/s v2 "
            f"{_ratio(current['v2'], other['v2']).show()}x, v1 "
            f"{_ratio(current['v1'], other['v1']).show()}x; emulator CPU per event v2 "
            f"{_cpu_ratio(current['v2'], other['v2']).show()}x, v1 "
            f"{_cpu_ratio(current['v1'], other['v1']).show()}x."
        )
    for name in names:
        lines.append(
            f"Events the emulator ({_label(results, name)}) holds: {results[name]['held']:,} of "
            f"{results[name]['answered']:,} answered 200."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--profile", action="store_true", help="cProfile the v2 path only")
    parser.add_argument(
        "--profile-http", action="store_true", help="cProfile the v2 path over the HTTP server"
    )
    parser.add_argument(
        "--server", choices=["werkzeug", "gunicorn"], default="gunicorn", help="the emulator's"
    )
    parser.add_argument(
        "--baseline-ref", help="also measure stripe_emulator/ as it was at this git commit"
    )
    parser.add_argument(
        "--baseline-server",
        choices=["werkzeug", "gunicorn"],
        help="serve the baseline (this commit's code without --baseline-ref) by this server",
    )
    args = parser.parse_args()
    if args.profile:
        print(profile_v2(100 if args.quick else 500))
        return
    if args.profile_http:
        print(profile_v2_http(2.0 if args.quick else args.seconds))
        return
    repeats, seconds = (1, 2.0) if args.quick else (args.repeats, args.seconds)
    results = measure(repeats, seconds, args.server, args.baseline_ref, args.baseline_server, print)
    record("emulator_ceiling", results, section(results, repeats, seconds), quick=args.quick)


if __name__ == "__main__":
    main()
