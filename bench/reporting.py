"""Benchmark 2: the reporting step against the emulator alone, v1 and v2, ratios in one run.

    python -m bench.reporting [--quick] [--repeats 3] [--seconds 5]
        [--v1-organizations 5000] [--v2-organizations 50000]
        [--v1-concurrency 32] [--v2-concurrency 8] [--baseline-sample 200] [--no-profile]
        [--server gunicorn|werkzeug]

One emulator process (its own, so it does not share this interpreter's lock), two seeded
databases (one per API, so each API's day has its own size), x 2 meters per organization.
Every repeat measures, with no latency and no limit, in an order that rotates each repeat so
load from elsewhere hits every candidate:

- `emulator v1`: `bench.emulator_ceiling.run_v1`, raw `http.client`, 16 keep-alive
  connections, pre-built bodies, no SDK, no database: what the emulator alone answers on v1;
- `emulator v1, SDK`: `bench.emulator_ceiling.run_v1_sdk`, 32 threads of the official SDK, no
  database: the same plus the SDK's own cost, which any v1 client pays;
- `project v1`: the reporting step as the asset runs it with `--api v1`: `plan_targets` for both
  meters, `revoke_leases`, `send_chunks(engine, client, unsent_chunks(...), api="v1")`; a pass
  that left rows `failed` is followed by another, as the asset's Dagster RetryPolicy would (the
  policy's delay is not added);
- `emulator v2`: `bench.emulator_ceiling.run_v2`, 100 events a request, 4 in flight, raw
  `http.client`: the emulator's own v2 stream ceiling;
- `emulator v2, SDK`: `bench.emulator_ceiling.run_v2_sdk`, 8 threads of the official SDK's
  `meter_event_stream.create`, 100 events a request, no database: the same plus the SDK's own
  cost per request, which the v2 sender pays too;
- `project v2`: the same reporting step with `api="v2"`.

Ratios (project / emulator, per API) are taken within each repeat. Then, per repeat, both
project runs again under 50 ms latency, 1,000 requests/s, 5% 500s and 2% 429s, and the
one-at-a-time "simple service" on a sample under the same faults. Checked after every project
run: every planned row `sent` in the ledger, each planned identifier held by the emulator
exactly once, and its totals per meter equal to the plan. Last, unless `--no-profile`, one
more clean project run per API under a stack sampler (`bench.sampler`) shows where the
sender's threads spend their wall time.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import stripe
from sqlalchemy import Engine, text

from bench import emulator_ceiling as ceiling
from bench.common import (
    Stats,
    billed_seed,
    facts_lines,
    machine_facts,
    postgres_server,
    record,
    scratch_database,
    table,
)
from bench.emulator import (
    API_KEY,
    Server,
    control,
    cpu_seconds,
    emulator_process,
    sdk_client,
)
from bench.sampler import StackSampler
from bench.sender_profile import CallTimers, explain_batch
from billing_pipeline.db.engine import make_engine
from billing_pipeline.stripe_client import MAX_STREAM_EVENTS, StripeBilling
from billing_pipeline.stripe_reporting.leases import revoke_leases
from billing_pipeline.stripe_reporting.ledger import unsent_chunks
from billing_pipeline.stripe_reporting.meter_sync import verify_meters
from billing_pipeline.stripe_reporting.planning import MeterTarget, plan_targets
from billing_pipeline.stripe_reporting.sender import MeterEventApi, send_chunks
from billing_pipeline.usage.daily_usage import refresh_daily_usage
from billing_pipeline.usage.meters import METERS

MAX_PASSES = 5
APIS: tuple[MeterEventApi, ...] = ("v1", "v2")


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


CLEAN = Scenario("no latency, no limit", 0, None)
FAULTY = Scenario("50 ms, 1,000 rps, 5% 5xx, 2% 429", 50, 1000, 0.05, 0.02)


@dataclass(frozen=True)
class Setup:
    """What each API's project runs need: its database, size, concurrency and fresh days."""

    api: MeterEventApi
    db_url: str
    organizations: int
    concurrency: int
    days: list[date]


def _seed(db_url: str, api_url: str, organizations: int, days: int) -> list[date]:
    """Seed, give every organization an emulator customer, create the meters, aggregate."""
    from billing_demo.seed.loader import seed_database

    options = billed_seed(organizations, days)
    seed_database(db_url, options)
    attach_customers(db_url, api_url)
    engine = make_engine(db_url, pool_size=1)
    billing = StripeBilling(API_KEY, api_url)
    remote = {m.event_name for m in billing.list_meters()}
    for meter in METERS:
        if meter.event_name not in remote:
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


class EventLog:
    """The emulator's stored events, read from where the last read stopped (`after=seq`), so
    checking a run does not fetch the whole run's history again."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.seq = 0

    def since_last(self) -> list[dict[str, Any]]:
        events = control(self.api_url).meter_events(after=self.seq)
        if events:
            self.seq = max(e["seq"] for e in events)
        return events


def _verify(events: list[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Duplicates and losses for one day, from the emulator's records and the ledger's rows."""
    owed = {row["identifier"]: row for row in rows}
    received = [e for e in events if e["identifier"] in owed]
    counts = Counter(e["identifier"] for e in received)
    planned_total = Counter[str]()
    for row in owed.values():
        planned_total[row["event_name"]] += row["value"]
    received_total = Counter[str]()
    for event in received:
        received_total[event["event_name"]] += int(event["value"])
    return {
        "events": len(owed),
        "duplicates": sum(n - 1 for n in counts.values()),
        "lost": len(owed) - len(counts),
        "ledger_not_sent": sum(row["status"] != "sent" for row in owed.values()),
        "totals_differ": int(planned_total != received_total),
    }


def _plan(engine: Engine, billing: StripeBilling, day: date) -> Counter[str]:
    """The asset's planning for one day: both meters side by side (`plan_targets`), with the
    window Stripe reports; the rows planned, by status (the asset keeps counts only)."""
    remote = verify_meters(billing, METERS)
    targets = [MeterTarget(meter, remote[meter.name].event_time_window) for meter in METERS]
    counts = Counter[str]()
    for (_, status), n in plan_targets(engine, targets, day, day + timedelta(days=1)).items():
        counts[status] += n
    return counts


def day_rows(db_url: str, day: date) -> list[dict[str, Any]]:
    """The ledger's rows of one day (every row of a fresh day was planned by this run)."""
    engine = make_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT identifier, event_name, stripe_customer_id, value, event_timestamp, "
                "status FROM billing.meter_ledger WHERE day = :day ORDER BY identifier"
            ),
            {"day": day},
        ).mappings()
        found = [dict(row) for row in rows]
    engine.dispose()
    return found


def run_project(
    setup: Setup, api_url: str, log: EventLog, profilers: Sequence[Any] = ()
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The asset's reporting step for one fresh day; CPU of this process and the emulator's.

    `profilers` (context managers: a stack sampler, call timers) are active for the run.
    """
    day = setup.days.pop(0)
    log.since_last()
    engine = make_engine(setup.db_url, pool_size=setup.concurrency + 2, max_overflow=4)
    billing = StripeBilling(API_KEY, api_url)
    end_day = day + timedelta(days=1)
    with ExitStack() as stack:
        for profiler in profilers:
            stack.enter_context(profiler)
        emulator_cpu, own_cpu = cpu_seconds(api_url), time.process_time()
        began = time.perf_counter()
        planned = _plan(engine, billing, day)
        planned_at = time.perf_counter()
        names = [m.name for m in METERS]
        passes = 0
        transient = 0
        while passes < MAX_PASSES:
            revoke_leases(engine)
            report = send_chunks(
                engine,
                billing,
                unsent_chunks(engine, names, day, end_day),
                concurrency=setup.concurrency,
                api=setup.api,
            )
            passes += 1
            transient += report.transient_failures
            if not report.counts.get("failed"):
                break
        seconds = time.perf_counter() - began
        emulator_cpu, own_cpu = cpu_seconds(api_url) - emulator_cpu, time.process_time() - own_cpu
    engine.dispose()
    ledger = day_rows(setup.db_url, day)
    checks = _verify(log.since_last(), ledger)
    sent = checks["events"]
    send_seconds = seconds - (planned_at - began)
    return (
        {
            "day": day.isoformat(),
            "seconds": seconds,
            "plan_seconds": planned_at - began,
            "send_seconds": send_seconds,
            "events_per_second": sent / seconds,
            "send_events_per_second": sent / send_seconds,
            "client_cores": own_cpu / seconds,
            "emulator_cores": emulator_cpu / seconds,
            "passes": passes,
            "transient_failures": transient,
            "planned": dict(planned),
            **checks,
        },
        ledger,
    )


def profile_project(setup: Setup, api_url: str, log: EventLog) -> dict[str, Any]:
    """One more clean run under a stack sampler and call timers; for v2, then the plans of one
    claim and one outcome write of a request's 100 rows on a fresh day."""
    sampler = StackSampler(("stripe-send", "MainThread"))
    timers = CallTimers()
    figures, _ = run_project(setup, api_url, log, (sampler, timers))
    plans: dict[str, str] = {}
    if setup.api == "v2":
        day = setup.days.pop(0)
        engine = make_engine(setup.db_url, pool_size=1)
        _plan(engine, StripeBilling(API_KEY, api_url), day)
        plans = explain_batch(engine, day, [m.name for m in METERS], MAX_STREAM_EVENTS)
        engine.dispose()
    return {
        "run": figures,
        "sampler": sampler.report(),
        "timers": timers.table_rows(),
        "plans": plans,
    }


def run_simple_service(api_url: str, rows: Sequence[dict[str, Any]], sample: int) -> dict[str, Any]:
    """One event at a time, as a first cron job would; failures after the SDK's retries are
    lost (it keeps no ledger to resend them from)."""
    client = sdk_client(api_url, retries=2)
    began = time.perf_counter()
    lost = 0
    for row in rows[:sample]:
        try:
            client.v1.billing.meter_events.create(
                {
                    "event_name": row["event_name"],
                    "identifier": "simple-" + row["identifier"],
                    "timestamp": int(row["event_timestamp"].timestamp()),
                    "payload": {
                        "stripe_customer_id": row["stripe_customer_id"],
                        "value": str(row["value"]),
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


Driver = Callable[[str, list[list[str]], float, str], dict[str, Any]]
CEILINGS: dict[str, Driver] = {
    "emulator v1": ceiling.run_v1,
    "emulator v1, SDK": ceiling.run_v1_sdk,
    "emulator v2": ceiling.run_v2,
    "emulator v2, SDK": ceiling.run_v2_sdk,
}
CANDIDATES = (
    "emulator v1",
    "emulator v1, SDK",
    "project v1",
    "emulator v2",
    "emulator v2, SDK",
    "project v2",
)


def run_ceiling(
    name: str, api_url: str, customers: list[list[str]], seconds: float, tag: str
) -> dict[str, Any]:
    emulator_cpu, own_cpu = cpu_seconds(api_url), time.process_time()
    sample = CEILINGS[name](api_url, customers, seconds, tag)
    wall = sample["seconds"]
    return {
        **sample,
        "events_per_second": sample["events"] / wall,
        "client_cores": (time.process_time() - own_cpu) / wall,
        "emulator_cores": (cpu_seconds(api_url) - emulator_cpu) / wall,
    }


def measure(
    sizes: dict[MeterEventApi, int],
    concurrency: dict[MeterEventApi, int],
    repeats: int,
    seconds: float,
    sample: int,
    profile: bool,
    emulator_server: Server,
    log: Callable[[str], None],
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "clean": {name: [] for name in CANDIDATES},
        "faulty": {f"project {api}": [] for api in APIS},
        "simple": [],
        "profiles": {},
    }
    with (
        postgres_server() as server,
        emulator_process(server=emulator_server) as api_url,
        ExitStack() as stack,
    ):
        results["facts"] = machine_facts(server)
        setups: dict[MeterEventApi, Setup] = {}
        for api in APIS:
            db_url = stack.enter_context(scratch_database(server, f"bench_report_{api}"))
            began = time.perf_counter()
            days = _seed(db_url, api_url, sizes[api], 2 * repeats + 2 * int(profile))
            setups[api] = Setup(api, db_url, sizes[api], concurrency[api], days)
            log(
                f"{api}: seeded {sizes[api]:,} organizations in {time.perf_counter() - began:.0f} s"
            )
        customers = ceiling._setup(api_url, max(ceiling.V1_CONNECTIONS, ceiling.V1_SDK_THREADS))
        events = EventLog(api_url)
        for repeat in range(repeats):
            CLEAN.apply(api_url)
            order = CANDIDATES[repeat % len(CANDIDATES) :] + CANDIDATES[: repeat % len(CANDIDATES)]
            for name in order:
                if name.startswith("project"):
                    api = "v1" if name.endswith("v1") else "v2"
                    figures, _ = run_project(setups[api], api_url, events)
                    log(
                        f"[{repeat + 1}/{repeats}] {name}: {figures['events']:,} events in "
                        f"{figures['seconds']:.1f} s (plan {figures['plan_seconds']:.1f} s), "
                        f"{figures['events_per_second']:.0f}/s, passes {figures['passes']}, "
                        f"dup {figures['duplicates']}, lost {figures['lost']}, "
                        f"cores client {figures['client_cores']:.2f} "
                        f"emulator {figures['emulator_cores']:.2f}"
                    )
                else:
                    figures = run_ceiling(name, api_url, customers, seconds, f"r{repeat}")
                    log(
                        f"[{repeat + 1}/{repeats}] {name}: {figures['events_per_second']:.0f} "
                        f"events/s {figures['statuses']}, cores client "
                        f"{figures['client_cores']:.2f} emulator {figures['emulator_cores']:.2f}"
                    )
                results["clean"][name].append(figures)
            FAULTY.apply(api_url)
            for api in APIS if repeat % 2 == 0 else APIS[::-1]:
                figures, ledger = run_project(setups[api], api_url, events)
                results["faulty"][f"project {api}"].append(figures)
                log(
                    f"[{repeat + 1}/{repeats}] faults, project {api}: {figures['seconds']:.1f} s, "
                    f"{figures['events_per_second']:.0f}/s, passes {figures['passes']}, "
                    f"dup {figures['duplicates']}, lost {figures['lost']}"
                )
                if api == "v1":
                    simple = run_simple_service(api_url, ledger, sample)
                    results["simple"].append(simple)
                    rate, lost = simple["events_per_second"], simple["lost"]
                    log(f"    simple service: {rate:.1f}/s, lost {lost}")
        if profile:
            CLEAN.apply(api_url)
            for api in APIS:
                profiled = profile_project(setups[api], api_url, events)
                results["profiles"][api] = profiled
                rate = profiled["run"]["events_per_second"]
                log(f"profile, project {api} ({rate:.0f}/s):\n{profiled['sampler']}")
                log(table(["work", "calls", "mean ms", "total s"], profiled["timers"]))
                for statement, plan in profiled["plans"].items():
                    log(f"{statement}:\n{plan}")
    return results


def _ratio(top: Sequence[dict[str, Any]], bottom: Sequence[dict[str, Any]]) -> Stats:
    return Stats.of(
        [a["events_per_second"] / b["events_per_second"] for a, b in zip(top, bottom, strict=True)]
    )


def _rate(samples: Sequence[dict[str, Any]], key: str = "events_per_second") -> str:
    return Stats.of([s[key] for s in samples]).show("{:,.0f}")


def _section(results: dict[str, Any], args: dict[str, Any]) -> str:
    clean = results["clean"]
    sizes, concurrency = args["organizations"], args["concurrency"]
    what = {
        "emulator v1": f"`run_v1`: raw http.client, {ceiling.V1_CONNECTIONS} keep-alive "
        "connections, no SDK, no DB",
        "emulator v1, SDK": f"`run_v1_sdk`: {ceiling.V1_SDK_THREADS} threads of the SDK, no DB",
        "project v1": f"reporting step, `--api v1`, {sizes['v1']:,} organizations x 2 meters, "
        f"concurrency {concurrency['v1']}",
        "emulator v2": f"`run_v2`: raw http.client, {ceiling.V2_BATCH} events a request, "
        f"{ceiling.V2_IN_FLIGHT} in flight",
        "emulator v2, SDK": f"`run_v2_sdk`: {ceiling.V2_SDK_THREADS} threads of the SDK, "
        f"{ceiling.V2_BATCH} events a request, no DB",
        "project v2": f"reporting step, `--api v2`, {sizes['v2']:,} organizations x 2 meters, "
        f"concurrency {concurrency['v2']} (requests in flight)",
    }
    rows = []
    for name in CANDIDATES:
        samples = clean[name]
        project = name.startswith("project")
        rows.append(
            [
                name,
                what[name],
                f"{samples[0]['events']:,}" if project else _rate(samples, "events"),
                _rate(samples),
                _rate(samples, "send_events_per_second") if project else "—",
                Stats.of([s["plan_seconds"] for s in samples]).show("{:.1f}") if project else "—",
                Stats.of([s["client_cores"] for s in samples]).show("{:.2f}"),
                Stats.of([s["emulator_cores"] for s in samples]).show("{:.2f}"),
                f"{sum(s['duplicates'] for s in samples)} / {sum(s['lost'] for s in samples)} / "
                f"{sum(s['ledger_not_sent'] + s['totals_differ'] for s in samples)}"
                if project
                else "—",
            ]
        )
    ratios = [
        [
            "project v1 / emulator v1",
            _ratio(clean["project v1"], clean["emulator v1"]).show("{:.0%}"),
            "80%",
        ],
        [
            "project v1 / emulator v1, SDK",
            _ratio(clean["project v1"], clean["emulator v1, SDK"]).show("{:.0%}"),
            "—",
        ],
        [
            "project v2 / emulator v2",
            _ratio(clean["project v2"], clean["emulator v2"]).show("{:.0%}"),
            "80%",
        ],
        [
            "project v2 / emulator v2, SDK",
            _ratio(clean["project v2"], clean["emulator v2, SDK"]).show("{:.0%}"),
            "—",
        ],
        [
            "project v2 / emulator v2, sending only (planning excluded)",
            Stats.of(
                [
                    p["send_events_per_second"] / e["events_per_second"]
                    for p, e in zip(clean["project v2"], clean["emulator v2"], strict=True)
                ]
            ).show("{:.0%}"),
            "—",
        ],
    ]
    faulty_rows = []
    for api in APIS:
        samples = results["faulty"][f"project {api}"]
        faulty_rows.append(
            [
                f"project {api}",
                f"{samples[0]['events']:,}",
                Stats.of([s["seconds"] for s in samples]).show("{:.1f}"),
                _rate(samples),
                f"{max(s['passes'] for s in samples)}",
                f"{sum(s['transient_failures'] for s in samples):,}",
                f"{sum(s['duplicates'] for s in samples)} / {sum(s['lost'] for s in samples)} / "
                f"{sum(s['ledger_not_sent'] + s['totals_differ'] for s in samples)}",
            ]
        )
    simple = results["simple"]
    simple_seconds = Stats.of([s["seconds"] for s in simple])
    v1_seconds = Stats.of([s["seconds"] for s in results["faulty"]["project v1"]])
    lines = [
        "## 2. Reporting: the project against the emulator alone, v1 and v2",
        "",
        f"Machine: {facts_lines(results['facts'])}",
        "",
        f"`python -m bench.reporting` — {args['repeats']} repeats; one emulator process "
        f"({args.get('server', 'werkzeug')}; no latency, no limit), candidates in an order "
        f"rotating each repeat; ceilings run {args['seconds']:.0f} s each; each project run "
        "reports a fresh day (new identifiers) and is the asset's step: `plan_targets` for both "
        "meters, `revoke_leases`, `send_chunks` over `unsent_chunks`; "
        "median (min-max); ratios taken within each repeat. Cores: CPU seconds per wall second "
        "of this process (client: the driver, or the project's planner and sender) and of the "
        "emulator's process. Check: duplicates / lost / (ledger rows not `sent` + days whose "
        "emulator totals differ from the plan).",
        "",
        table(
            [
                "candidate",
                "what runs",
                "events",
                "events/s",
                "events/s sending",
                "planning s",
                "client cores",
                "emulator cores",
                "dup / lost / ledger",
            ],
            rows,
        ),
        "",
        table(["ratio (within each repeat)", "median (min-max)", "target"], ratios),
        "",
        f"Under {FAULTY.name} (exactly-once under faults; rows left `failed` get another pass):",
        "",
        table(
            [
                "candidate",
                "events",
                "seconds",
                "events/s",
                "passes",
                "transient failures",
                "dup / lost / ledger",
            ],
            faulty_rows,
        ),
        "",
        "Simple service (one event at a time with the SDK, 2 retries, no ledger) on a sample of "
        f"{simple[0]['sample']} events a repeat under the same faults: "
        f"{_rate(simple)} events/s, extrapolated "
        f"{simple_seconds.show('{:.0f}')} s for the v1 day "
        f"({simple_seconds.median / v1_seconds.median:.0f}x the project's v1), "
        f"lost {sum(s['lost'] for s in simple)} of {sum(s['sample'] for s in simple)}.",
        *_profiles(results, args),
    ]
    return "\n".join(lines)


def _plan_text(plan: str) -> str:
    """A plan without the statement's 100 identifiers spelled out in it."""
    return re.sub(r"'\{[^}]*\}'", "'{...}'", plan)


def _profiles(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
    """Where the sender's threads spend a clean run's wall time, per API, and the plans."""
    lines: list[str] = []
    for api, profiled in results.get("profiles", {}).items():
        run = profiled["run"]
        lines += [
            "",
            f"Sender profile, project {api} (one more clean run: {run['events']:,} events, "
            f"{run['events_per_second']:,.0f} events/s end to end, planning "
            f"{run['plan_seconds']:.1f} s, sending {run['send_seconds']:.1f} s with "
            f"{args['concurrency'][api]} workers; the sampler and timers cost it a little). Wall "
            "time by call, summed over threads (`bench.sender_profile.CallTimers`):",
            "",
            table(["work", "calls", "mean ms", "total s"], profiled["timers"]),
            "",
            "Stack samples of the sender's worker threads and the main thread (`bench.sampler`; "
            "the main thread plans, claims v1 chunks and waits), innermost frames:",
            "",
            "```",
            *profiled["sampler"].split("\n")[3:15],
            "```",
        ]
        if profiled["plans"]:
            lines += [
                "",
                f"One claim and one outcome write of {profiled['plans']['rows']} fresh rows under "
                "`EXPLAIN (ANALYZE, BUFFERS, WAL)`:",
                "",
                "```",
                _plan_text(profiled["plans"]["claim"]),
                "",
                _plan_text(profiled["plans"]["write"]),
                "```",
            ]
    return lines


def render(data: dict[str, Any]) -> str:
    """The RESULTS.md section for the JSON a full run wrote."""
    return _section(data, data["args"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="each ceiling's duration")
    parser.add_argument("--v1-organizations", type=int, default=5_000)
    parser.add_argument("--v2-organizations", type=int, default=50_000)
    parser.add_argument("--v1-concurrency", type=int, default=32)
    parser.add_argument("--v2-concurrency", type=int, default=8)
    parser.add_argument("--baseline-sample", type=int, default=200)
    parser.add_argument("--no-profile", action="store_true", help="skip the sampled runs")
    parser.add_argument(
        "--server",
        choices=["werkzeug", "gunicorn"],
        default="gunicorn",
        help="the emulator's HTTP server (see bench/emulator_gunicorn.py)",
    )
    args = parser.parse_args()
    sizes: dict[MeterEventApi, int] = (
        {"v1": 300, "v2": 2_000}
        if args.quick
        else {"v1": args.v1_organizations, "v2": args.v2_organizations}
    )
    concurrency: dict[MeterEventApi, int] = {"v1": args.v1_concurrency, "v2": args.v2_concurrency}
    repeats, seconds = (1, 2.0) if args.quick else (args.repeats, args.seconds)
    sample = 50 if args.quick else args.baseline_sample
    results = measure(
        sizes,
        concurrency,
        repeats,
        seconds,
        sample,
        not args.no_profile,
        args.server,
        lambda m: print(m, flush=True),
    )
    summary = {
        "server": args.server,
        "organizations": sizes,
        "concurrency": concurrency,
        "repeats": repeats,
        "seconds": seconds,
    }
    record(
        "reporting",
        {"args": summary, **results},
        _section(results, summary),
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
