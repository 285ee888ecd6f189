"""Benchmark 2: reporting a day of usage to Stripe, the project's sender against one-at-a-time.

    python -m bench.reporting [--quick] [--repeats N] [--concurrency 50] [--baseline-sample 200]

10,000 organizations (all paying) x 2 meters, one day per measurement (so every measurement
sends fresh identifiers), against the Stripe emulator running in its own process:

- `emulator ceiling`: the emulator's own rate with no latency and no limit, driven by 32 SDK
  threads without any database work, so we know what the rest is measured against;
- `project`: the reporting step as the asset runs it: `plan_window` for both meters,
  `unsent_rows`, `send_rows(..., concurrency=N)`; a row still `failed` after a pass is retried
  by another pass, as the asset's Dagster RetryPolicy would (passes are counted, the policy's
  delay is not added);
- `simple service`: a loop sending one event at a time with the SDK (its default-style 2
  network retries, no ledger): what a team writes first. Sending 20,000 events at 50 ms each
  takes 17 minutes, so it runs on a sample and its rate is extrapolated (labelled as such);
- `v2 stream` (not supported by the pipeline's sender yet): the same events sent directly with
  the SDK through a meter event session, 100 events a request, 4 requests in flight.

Checked after every project run: every planned row is `sent` in the ledger, the emulator holds
each planned identifier exactly once, and its totals per meter equal the planned totals.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import Engine, text

from bench.common import (
    Stats,
    facts_lines,
    machine_facts,
    postgres_server,
    record,
    scratch_database,
    table,
)
from bench.emulator import API_KEY, control, emulator_process, sdk_client
from billing_pipeline.db.engine import make_engine
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.ledger import LedgerRow, unsent_rows
from billing_pipeline.stripe_reporting.meter_sync import verify_meters
from billing_pipeline.stripe_reporting.planning import MeterTarget, plan_window
from billing_pipeline.stripe_reporting.sender import MeterEventApi, send_rows
from billing_pipeline.usage.daily_usage import refresh_daily_usage
from billing_pipeline.usage.meters import METERS
from stripe_emulator.clock import iso8601

MAX_PASSES = 5
CEILING_EVENTS = 5_000
V2_BATCH = 100
V2_IN_FLIGHT = 4


@dataclass(frozen=True)
class Scenario:
    name: str
    latency_ms: int
    rate_limit: float | None
    error_500_rate: float = 0.0
    error_429_rate: float = 0.0

    def apply(self, url: str) -> None:
        emulator = control(url)
        emulator.set_faults(
            latency_ms=self.latency_ms,
            error_500_rate=self.error_500_rate,
            error_429_rate=self.error_429_rate,
        )
        emulator.set_rate_limit(self.rate_limit)


UNTHROTTLED = Scenario("no latency, no limit", 0, None)
LIMITED = Scenario("50 ms, 1,000 rps", 50, 1000)
FAULTY = Scenario("50 ms, 1,000 rps, 5% 5xx, 2% 429", 50, 1000, 0.05, 0.02)
SCENARIOS = (UNTHROTTLED, LIMITED, FAULTY)


def _seed(db_url: str, api_url: str, organizations: int, days: int) -> list[date]:
    """Seed, give every organization an emulator customer, create the meters, aggregate."""
    from billing_demo.seed.generator import SeedOptions
    from billing_demo.seed.loader import seed_database

    options = SeedOptions(
        organizations=organizations,
        sensors_per_org=2,
        days=days,
        readings_per_sensor_per_day=2,
        paid_fraction=1.0,
    )
    seed_database(db_url, options)
    attach_customers(db_url, api_url)
    engine = make_engine(db_url, pool_size=1)
    billing = StripeBilling(API_KEY, api_url)
    for meter in METERS:
        billing.create_meter(meter)
    for meter in METERS:
        refresh_daily_usage(engine, meter, options.range_start, options.range_end)
    engine.dispose()
    return [options.start_date + timedelta(days=i) for i in range(days)]


def attach_customers(db_url: str, api_url: str) -> None:
    """Create an emulator customer per subscription and make the subscription bill it.

    The seed writes pre-checkout rows (no customer, `incomplete`); the demo subscribes them in
    Stripe and lets the webhook flow fill them, which is not the path being measured, so this
    sets what that flow would: the customer and `active`.
    """
    engine = make_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        organizations = list(
            connection.execute(text("SELECT organization_id FROM subscriptions")).scalars()
        )
    client = sdk_client(api_url, retries=2)
    with ThreadPoolExecutor(16) as pool:
        customers = list(
            pool.map(
                lambda org: client.v1.customers.create({"metadata": {"organization_id": str(org)}}),
                organizations,
            )
        )
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE subscriptions SET stripe_customer_id = :customer, status = 'active' "
                "WHERE organization_id = :org"
            ),
            [
                {"org": org, "customer": c.id}
                for org, c in zip(organizations, customers, strict=True)
            ],
        )
    engine.dispose()


def _verify(
    api_url: str, engine: Engine, day: date, planned: Sequence[LedgerRow]
) -> dict[str, int]:
    """Duplicates and losses for one day, from the emulator's records and the ledger."""
    owed = {row.identifier: row for row in planned if row.status == "pending"}
    received = [e for e in control(api_url).meter_events() if e["identifier"] in owed]
    counts = Counter(e["identifier"] for e in received)
    with engine.connect() as connection:
        unsent = connection.execute(
            text("SELECT count(*) FROM billing.meter_ledger WHERE day = :day AND status <> 'sent'"),
            {"day": day},
        ).scalar_one()
    planned_total = Counter[str]()
    for row in owed.values():
        planned_total[row.event_name] += row.value
    received_total = Counter[str]()
    for event in received:
        received_total[event["event_name"]] += int(event["value"])
    return {
        "events": len(owed),
        "duplicates": sum(n - 1 for n in counts.values()),
        "lost": len(owed) - len(counts),
        "ledger_not_sent": int(unsent),
        "totals_differ": int(planned_total != received_total),
    }


def run_project(
    db_url: str, api_url: str, day: date, concurrency: int, api: MeterEventApi = "v1"
) -> tuple[dict[str, Any], list[LedgerRow]]:
    engine = make_engine(db_url, pool_size=concurrency + 2, max_overflow=4)
    billing = StripeBilling(API_KEY, api_url)
    began = time.perf_counter()
    end_day = day + timedelta(days=1)
    remote = verify_meters(billing, METERS)
    targets = [MeterTarget(m, remote[m.name].event_time_window) for m in METERS]
    planned = [
        row for t in targets for row in plan_window(engine, t, day, end_day, keep_rows=True).rows
    ]
    planned_at = time.perf_counter()
    names = [m.name for m in METERS]
    passes = 0
    transient = 0
    while passes < MAX_PASSES:
        rows = unsent_rows(engine, names, day, end_day)
        if not rows:
            break
        report = send_rows(engine, billing, rows, concurrency=concurrency, api=api)
        passes += 1
        transient += report.transient_failures
    seconds = time.perf_counter() - began
    checks = _verify(api_url, engine, day, planned)
    engine.dispose()
    sent = checks["events"]
    return (
        {
            "seconds": seconds,
            "plan_seconds": planned_at - began,
            "events_per_second": sent / seconds,
            "passes": passes,
            "transient_failures": transient,
            **checks,
        },
        planned,
    )


def run_simple_service(api_url: str, rows: Sequence[LedgerRow], sample: int) -> dict[str, Any]:
    """One event at a time, as a first cron job would; failures after the SDK's retries are
    lost (it keeps no ledger to resend them from)."""
    client = sdk_client(api_url, retries=2)
    began = time.perf_counter()
    lost = 0
    for row in rows[:sample]:
        assert row.stripe_customer_id is not None
        try:
            client.v1.billing.meter_events.create(
                {
                    "event_name": row.event_name,
                    "identifier": "simple-" + row.identifier,
                    "timestamp": int(row.event_timestamp.timestamp()),
                    "payload": {
                        "stripe_customer_id": row.stripe_customer_id,
                        "value": str(row.value),
                    },
                }
            )
        except stripe.StripeError:
            lost += 1
    seconds = time.perf_counter() - began
    rate = min(sample, len(rows)) / seconds
    return {
        "sample": min(sample, len(rows)),
        "sample_seconds": seconds,
        "events_per_second": rate,
        "seconds": len(rows) / rate,
        "lost": lost,
        "lost_share": lost / max(1, min(sample, len(rows))),
    }


def run_v2_stream(api_url: str, rows: Sequence[LedgerRow], tag: str) -> dict[str, Any]:
    """The same events through `/v2/billing/meter_event_stream`, 100 a request."""
    session = sdk_client(api_url).v2.billing.meter_event_session.create()
    streamer = sdk_client(api_url, key=session.authentication_token, retries=2)
    batches = [rows[i : i + V2_BATCH] for i in range(0, len(rows), V2_BATCH)]

    def send(batch: Sequence[LedgerRow]) -> None:
        events: Any = [
            {
                "event_name": row.event_name,
                "identifier": f"v2{tag}-{row.identifier}",
                "timestamp": iso8601(int(row.event_timestamp.timestamp())),
                "payload": {"stripe_customer_id": row.stripe_customer_id, "value": str(row.value)},
            }
            for row in batch
        ]
        streamer.v2.billing.meter_event_stream.create({"events": events})

    began = time.perf_counter()
    with ThreadPoolExecutor(V2_IN_FLIGHT) as pool:
        list(pool.map(send, batches))
    seconds = time.perf_counter() - began
    prefix = f"v2{tag}-"
    received = Counter(
        e["identifier"]
        for e in control(api_url).meter_events()
        if e["identifier"].startswith(prefix)
    )
    return {
        "seconds": seconds,
        "requests": len(batches),
        "events_per_second": len(rows) / seconds,
        "duplicates": sum(n - 1 for n in received.values()),
        "lost": len(rows) - len(received),
    }


def emulator_ceiling(api_url: str, customers: Sequence[str], events: int) -> dict[str, Any]:
    """Requests per second the emulator answers with no latency or limit: 32 SDK threads, no DB.

    Each event has its own (customer, meter) pair, so the per-customer concurrency rule never
    fires; the figure is the emulator plus an SDK client sharing this machine's two cores.
    """
    UNTHROTTLED.apply(api_url)
    client = sdk_client(api_url)
    names = [m.event_name for m in METERS]
    timestamp = int(datetime.now(UTC).timestamp()) - 3600
    counter = iter(range(events))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            client.v1.billing.meter_events.create(
                {
                    "event_name": names[(i // len(customers)) % len(names)],
                    "identifier": f"ceiling-{time.monotonic_ns()}-{i}",
                    "timestamp": timestamp,
                    "payload": {"stripe_customer_id": customers[i % len(customers)], "value": "1"},
                }
            )

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    return {"events": events, "seconds": seconds, "requests_per_second": events / seconds}


def _customers(db_url: str) -> list[str]:
    engine = make_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        customers = list(
            connection.execute(
                text("SELECT stripe_customer_id FROM subscriptions ORDER BY organization_id")
            ).scalars()
        )
    engine.dispose()
    return customers


def measure(
    organizations: int,
    repeats: int,
    concurrency: int,
    sample: int,
    log: Callable[[str], None],
    api: MeterEventApi = "v1",
) -> dict[str, Any]:
    results: dict[str, Any] = {"ceiling": [], "project": {}, "simple": {}, "v2": []}
    with postgres_server() as server, emulator_process() as api_url:
        facts = machine_facts(server)
        with scratch_database(server, "bench_report") as db_url:
            days = iter(_seed(db_url, api_url, organizations, len(SCENARIOS) * repeats))
            customers = _customers(db_url)
            log(f"seeded {organizations:,} organizations with emulator customers")
            for repeat in range(repeats):
                ceiling = emulator_ceiling(api_url, customers, min(CEILING_EVENTS, organizations))
                results["ceiling"].append(ceiling)
                log(f"emulator ceiling: {ceiling['requests_per_second']:.0f} requests/s")
                for scenario in SCENARIOS:
                    scenario.apply(api_url)
                    day = next(days)
                    project, planned = run_project(db_url, api_url, day, concurrency, api)
                    results["project"].setdefault(scenario.name, []).append(project)
                    log(
                        f"[{repeat + 1}/{repeats}] {scenario.name}: "
                        f"project {project['seconds']:.1f} s "
                        f"({project['events_per_second']:.0f}/s, {project['passes']} passes, "
                        f"dup {project['duplicates']}, lost {project['lost']})"
                    )
                    pending = [row for row in planned if row.status == "pending"]
                    if scenario is not UNTHROTTLED:
                        simple = run_simple_service(api_url, pending, sample)
                        results["simple"].setdefault(scenario.name, []).append(simple)
                        log(
                            f"    simple service: {simple['events_per_second']:.1f}/s on "
                            f"{simple['sample']} events, lost {simple['lost']}"
                        )
                    if scenario is LIMITED:
                        v2 = run_v2_stream(api_url, pending, str(repeat))
                        results["v2"].append(v2)
                        log(
                            f"    v2 stream: {v2['seconds']:.1f} s "
                            f"({v2['events_per_second']:.0f}/s)"
                        )
    results["facts"] = facts
    return results


def _stats(samples: Sequence[dict[str, Any]], key: str) -> Stats:
    return Stats.of([s[key] for s in samples])


def _section(results: dict[str, Any], organizations: int, repeats: int, concurrency: int) -> str:
    ceiling = _stats(results["ceiling"], "requests_per_second")
    rows = []
    for scenario in SCENARIOS:
        project = results["project"][scenario.name]
        seconds = _stats(project, "seconds")
        events = project[0]["events"]
        achievable = min(scenario.rate_limit or ceiling.median, ceiling.median)
        simple = results["simple"].get(scenario.name)
        rows.append(
            [
                scenario.name,
                f"{events:,}",
                seconds.show("{:.1f}"),
                _stats(project, "events_per_second").show("{:.0f}"),
                f"{events / scenario.rate_limit / seconds.median:.0%}"
                if scenario.rate_limit
                else "-",
                f"{events / achievable / seconds.median:.0%}",
                f"{max(p['passes'] for p in project)}",
                f"{sum(p['duplicates'] for p in project)} / {sum(p['lost'] for p in project)}"
                f" / {sum(p['ledger_not_sent'] + p['totals_differ'] for p in project)}",
                _stats(simple, "seconds").show("{:.0f}") + " (extrapolated)" if simple else "—",
                f"{_stats(simple, 'seconds').median / seconds.median:.0f}x" if simple else "—",
                f"{sum(s['lost'] for s in simple)} of {sum(s['sample'] for s in simple)}"
                if simple
                else "—",
            ]
        )
    v2 = results["v2"]
    return "\n".join(
        [
            "## 2. Reporting: 10,000 organizations x 2 meters",
            "",
            f"Machine: {facts_lines(results['facts'])}",
            "",
            f"`python -m bench.reporting` — {organizations:,} organizations, {repeats} repeats, "
            f"sender concurrency {concurrency} (engine pool {concurrency + 2}); emulator in its "
            "own process on the same 2 cores; median (min-max). `% of limit` = the time the "
            "1,000 rps limit allows / measured wall time; `% of achievable` uses min(limit, "
            "emulator ceiling) instead. Wall time includes planning. Duplicates: planned "
            "identifiers the emulator holds more than once; lost: planned identifiers it lacks; "
            "ledger/totals: rows not `sent` plus days whose emulator totals differ from the "
            "plan. The simple service runs on a sample and is extrapolated to all events.",
            "",
            f"Emulator ceiling (no latency, no limit, 32 SDK threads, no DB): "
            f"{ceiling.show('{:.0f}')} requests/s.",
            "",
            table(
                [
                    "scenario",
                    "events",
                    "project s",
                    "events/s",
                    "% of limit",
                    "% of achievable",
                    "passes",
                    "dup / lost / ledger",
                    "simple service s",
                    "speed-up",
                    "simple lost",
                ],
                rows,
            ),
            "",
            "v2 meter event stream (SDK directly, 100 events a request, 4 in flight, 50 ms, "
            f"1,000 rps; not the pipeline's sender): {_stats(v2, 'seconds').show('{:.1f}')} s, "
            f"{_stats(v2, 'events_per_second').show('{:.0f}')} events/s, "
            f"{sum(v['duplicates'] for v in v2)} duplicates, {sum(v['lost'] for v in v2)} lost.",
        ]
    )


def render(data: dict[str, Any]) -> str:
    """The RESULTS.md section for the JSON a full run wrote."""
    return _section(data, data["organizations"], data["repeats"], data["concurrency"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 organizations, 1 repeat")
    parser.add_argument("--organizations", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--baseline-sample", type=int, default=200)
    parser.add_argument("--api", choices=["v1", "v2"], default="v1", help="the sender's API")
    args = parser.parse_args()
    organizations = 300 if args.quick else args.organizations
    repeats = 1 if args.quick else args.repeats
    sample = 50 if args.quick else args.baseline_sample
    results = measure(
        organizations, repeats, args.concurrency, sample, lambda m: print(m, flush=True), args.api
    )
    record(
        "reporting",
        {
            "organizations": organizations,
            "repeats": repeats,
            "concurrency": args.concurrency,
            **results,
        },
        _section(results, organizations, repeats, args.concurrency),
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
