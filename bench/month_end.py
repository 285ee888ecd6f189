"""Benchmark 6: month end at scale through Dagster on the v2 meter event stream.

    python -m bench.month_end [--quick] [--scenarios day,backfill,memory,faults]
        [--organizations 100000] [--small-organizations 10000] [--days 35]
        [--concurrency 8] [--repeats 1]

Every measurement is one Dagster run of `usage/*` and `stripe/meter_events` (`dg.materialize`
on a dagster-postgres instance, `StripeResource(meter_event_api="v2")`), launched in a fresh
subprocess so that its peak RSS (`ru_maxrss`) is its own, against a fresh copy of a seeded
database and a fresh emulator process holding a customer per organization:

- `day`: one day (yesterday) for `--organizations` organizations x 2 meters, end to end and
  per step (target < 60 s);
- `backfill`: `--days` days ending yesterday for `--small-organizations` organizations, one run
  with the partition-range tags (as `bench.backfill`; target < 3 min);
- `memory`: the one-day run at `--small-organizations`, beside the `day` runs: the peak RSS of
  the run's process at both sizes (target: the same);
- `faults`: one day at `--small-organizations` with 5% 500s, 2% 429s and 1% dropped
  connections (after the request was applied), the run's process killed with SIGKILL once part
  of its rows are sent, then a rerun of the same partition.

Checked after every scenario, from the emulator (`/_emulator/meter_events`) and the source rows
(not the ledger): each identifier held once (duplicates); the emulator's value per (customer,
meter, day), computed with the emulator's own aggregation rules (`stripe_emulator.aggregation`:
hourly windows keep their newest event), equals the value the benchmark computes itself from
`sensors` and `temperature_readings` (losses: any (customer, meter, day) that differs); every
`sent` ledger identifier held; no ledger row left pending or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

from sqlalchemy import text

from bench.common import (
    OUT_DIR,
    Stats,
    billed_seed,
    cloned_database,
    facts_lines,
    ledger_outcome,
    machine_facts,
    peak_rss_mib,
    postgres_server,
    record,
    scratch_database,
    table,
)
from bench.emulator import API_KEY, emulator_with_customers
from billing_demo.seed.loader import seed_database
from billing_pipeline.db.engine import make_engine
from billing_pipeline.db.statuses import UNSENT_STATUSES
from billing_pipeline.stripe_client import RemoteMeter, StripeBilling
from billing_pipeline.usage.meters import METERS
from stripe_emulator.aggregation import MeterUsage, counted_events
from stripe_emulator.control import EmulatorControl
from stripe_emulator.faults import FaultConfig
from stripe_emulator.records import MeterEvent
from stripe_emulator.store import Settings

SCENARIOS = ("day", "backfill", "memory", "faults")
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
REPORTING_STEP = "stripe__meter_events"
FAULTS = FaultConfig(error_429_rate=0.02, error_500_rate=0.05, drop_rate=0.01)
# The faults run is killed once this share of its ledger rows is sent.
KILL_AT_SHARE = 0.4
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Source:
    """A seeded database used as a template: each run reports a fresh copy of it."""

    url: str
    organizations: int
    first: date
    last: date
    readings: int
    seed_seconds: float


def analyze(url: str) -> None:
    """Statistics for every table, as autovacuum keeps them in a database in use. A freshly
    seeded database has none (and billing tables that stay empty here never get any), and
    the attribution SQL then estimates one row per CTE: measured at 10,000 organizations, one
    `unbilled_usage` statement took 24 s on such a database and 2 s once analyzed, a cost of
    the seed, not of the pipeline. Each run's copy (`CREATE DATABASE ... TEMPLATE`) keeps them."""
    engine = make_engine(url, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
    engine.dispose()


@contextmanager
def seeded(server: str, organizations: int, days: int) -> Iterator[Source]:
    """The demo's own seed (sensor history, dropouts), all organizations paying, 2 sensors and
    2 readings a sensor-day: what is reported is per organization, not per reading."""
    options = billed_seed(organizations, days)
    with scratch_database(server, "bench_month_src") as url:
        began = time.perf_counter()
        summary = seed_database(url, options)
        analyze(url)
        seconds = time.perf_counter() - began
        yield Source(
            url, organizations, options.start_date, options.end_date, summary.readings, seconds
        )


# ---- the run, in its own process -------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    db_url: str
    dagster_url: str
    api_url: str
    first: str
    last: str
    concurrency: int


def _worker(spec: RunSpec) -> dict[str, Any]:
    """One Dagster run of every asset over `first..last`, as the schedule or a backfill runs it."""
    import dagster as dg

    from bench.backfill import _step_seconds
    from billing_pipeline.resources import PostgresResource, StripeResource
    from billing_pipeline.stripe_reporting.assets import build_reporting_asset
    from billing_pipeline.usage.assets import build_usage_assets

    where: dict[str, Any] = (
        {"partition_key": spec.first}
        if spec.first == spec.last
        else {"tags": {RANGE_START: spec.first, RANGE_END: spec.last}}
    )
    storage = {"storage": {"postgres": {"postgres_url": spec.dagster_url}}}
    with dg.instance_for_test(overrides=storage) as instance:
        began = time.perf_counter()
        result = dg.materialize(
            [*build_usage_assets(), build_reporting_asset()],
            instance=instance,
            resources={
                "postgres": PostgresResource(database_url=spec.db_url),
                "stripe": StripeResource(
                    secret_key=API_KEY,
                    api_base=spec.api_url,
                    meter_event_api="v2",
                    concurrency=spec.concurrency,
                ),
            },
            raise_on_error=False,
            **where,
        )
        seconds = time.perf_counter() - began
        steps = _step_seconds(instance, result.run_id)
        logs = _reporting_logs(instance, result.run_id)
    return {
        "success": result.success,
        "seconds": seconds,
        "steps": steps,
        **logs,
        "peak_rss_mib": peak_rss_mib(),
    }


def _reporting_logs(instance: Any, run_id: str) -> dict[str, Any]:
    """When the reporting step finished planning (its "planned ..." log line), how many times
    it started (RetryPolicy), and what it said about leases left by a dead run."""
    started: float | None = None
    planned: float | None = None
    attempts = 0
    freed: list[str] = []
    for entry in instance.all_logs(run_id):
        if entry.step_key != REPORTING_STEP:
            continue
        event = entry.dagster_event
        if event is not None and event.event_type_value == "STEP_START":
            started, attempts = entry.timestamp, attempts + 1
        elif event is None and entry.user_message.startswith("planned "):
            planned = entry.timestamp
        elif event is None and entry.user_message.startswith("freed "):
            freed.append(entry.user_message)
    return {
        "plan_seconds": planned - started if planned and started else None,
        "reporting_attempts": attempts,
        "freed": freed,
    }


@dataclass
class Launched:
    """A run's process; its output goes to files, so a process left unread never blocks."""

    process: subprocess.Popen[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]


@contextmanager
def _launch(spec: RunSpec) -> Iterator[Launched]:
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.month_end", "--worker", json.dumps(asdict(spec))],
            stdout=stdout,
            stderr=stderr,
        )
        try:
            yield Launched(process, stdout, stderr)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _output(launched: Launched) -> tuple[str, str]:
    launched.process.wait()
    texts = []
    for handle in (launched.stdout, launched.stderr):
        handle.seek(0)
        texts.append(handle.read().decode(errors="replace"))
    return texts[0], texts[1]


def _finish(launched: Launched) -> dict[str, Any]:
    stdout, stderr = _output(launched)
    # The run's own log, for reading what a slow or failed run did (bench/out is git-ignored).
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "month_end-last-run.log").write_text(stderr)
    code = launched.process.returncode
    if code != 0:
        raise RuntimeError(f"the run's process failed ({code}):\n{stderr[-4000:]}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    if not result["success"]:
        print(f"the Dagster run failed; its log:\n{stderr[-6000:]}", file=sys.stderr)
    return result


# ---- what the emulator must hold -------------------------------------------------------------

Key = tuple[str, str, date]  # (customer, event name, day)


def source_totals(db_url: str, first: date, last: date) -> Counter[Key]:
    """What each customer owes per meter and day, computed from the source rows here (not from
    the pipeline's usage table or ledger): readings recorded in the day, and sensors active at
    its end (created before midnight, not deactivated by then). Zero values are left out."""
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(last, datetime.min.time(), tzinfo=UTC) + DAY
    sql = """
        WITH readings AS (
            SELECT s.organization_id, (r.recorded_at AT TIME ZONE 'UTC')::date AS day,
                   count(*) AS value
            FROM temperature_readings r JOIN sensors s ON s.id = r.sensor_id
            WHERE r.recorded_at >= :start AND r.recorded_at < :end
            GROUP BY 1, 2
        ), active AS (
            SELECT s.organization_id, (d.day_start AT TIME ZONE 'UTC')::date AS day,
                   count(*) AS value
            FROM generate_series(CAST(:start AS timestamptz), CAST(:end AS timestamptz)
                                 - interval '1 day', interval '1 day') AS d(day_start)
            JOIN sensors s ON s.created_at < d.day_start + interval '1 day'
                 AND (s.deactivated_at IS NULL
                      OR s.deactivated_at >= d.day_start + interval '1 day')
            GROUP BY 1, 2
        )
        SELECT sub.stripe_customer_id, 'temperature_readings', u.day, u.value
        FROM readings u JOIN subscriptions sub USING (organization_id)
        UNION ALL
        SELECT sub.stripe_customer_id, 'active_sensors', u.day, u.value
        FROM active u JOIN subscriptions sub USING (organization_id)
    """
    totals: Counter[Key] = Counter()
    engine = make_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        for customer, event_name, day, value in connection.execute(
            text(sql), {"start": start, "end": end}
        ):
            totals[(customer, event_name, day)] += int(value)
    engine.dispose()
    return +totals


def held_totals(events: Sequence[dict[str, Any]], meters: dict[str, RemoteMeter]) -> Counter[Key]:
    """What the emulator bills per (customer, meter, day), by its own rules: cancels removed,
    each pre-aggregation window keeps its newest event, then `sum` or `last` over the day."""
    newer = Settings().newer_mode
    by_series: defaultdict[tuple[str, str], list[MeterEvent]] = defaultdict(list)
    for event in events:
        record = MeterEvent(**event)
        by_series[(record.customer, record.event_name)].append(record)
    totals: Counter[Key] = Counter()
    for (customer, event_name), mine in by_series.items():
        meter = meters[event_name]
        counted = tuple(counted_events(mine, meter.event_time_window, newer))
        usage = MeterUsage(meter.formula, meter.event_time_window, Settings().last_mode, counted)
        for day in {datetime.fromtimestamp(e.timestamp, UTC).date() for e in counted}:
            start = int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp())
            totals[(customer, event_name, day)] = int(usage.value(start, start + 86_400))
    return +totals


def check(
    db_url: str, api_url: str, meters: dict[str, RemoteMeter], owed: Counter[Key]
) -> dict[str, Any]:
    """Duplicates and losses, from the emulator and the source rows; what the ledger left open."""
    events = EmulatorControl(api_url, timeout=600).meter_events()
    held = held_totals(events, meters)
    identifiers = Counter(e["identifier"] for e in events)
    ledger = ledger_outcome(db_url)
    statuses, sent, leased = ledger.statuses, ledger.sent, ledger.leased
    differing = [key for key in owed.keys() | held.keys() if owed[key] != held[key]]
    return {
        "events_held": len(events),
        "duplicates": sum(n - 1 for n in identifiers.values()),
        "owed_keys": len(owed),
        "differing_keys": len(differing),
        "missing_value": sum(max(0, owed[k] - held[k]) for k in differing),
        "extra_value": sum(max(0, held[k] - owed[k]) for k in differing),
        "sent_not_held": len(sent - identifiers.keys()),
        "ledger": dict(statuses),
        "open": sum(statuses[s] for s in UNSENT_STATUSES) + leased,
        "examples": [
            {"key": [str(part) for part in k], "owed": owed[k], "held": held[k]}
            for k in sorted(differing)[:5]
        ],
    }


# ---- scenarios -------------------------------------------------------------------------------


def _ledger_progress(db_url: str) -> tuple[int, int]:
    engine = make_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FROM billing.meter_ledger"
            )
        ).one()
    engine.dispose()
    return int(row[0]), int(row[1])


def _kill_mid_reporting(spec: RunSpec) -> dict[str, Any]:
    """Start the run and SIGKILL its process once part of its ledger rows are sent."""
    with _launch(spec) as launched:
        process = launched.process
        sent = total = 0
        while process.poll() is None:
            sent, total = _ledger_progress(spec.db_url)
            if total and sent >= KILL_AT_SHARE * total:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        process.wait()
    held = len(EmulatorControl(spec.api_url, timeout=600).meter_events())
    ledger = ledger_outcome(spec.db_url)
    statuses, leased = ledger.statuses, ledger.leased
    return {
        "killed": process.returncode == -signal.SIGKILL,
        "sent_when_killed": sent,
        "ledger_rows": total,
        "emulator_held_after_kill": held,
        "ledger_after_kill": dict(statuses),
        "leased_after_kill": leased,
    }


@dataclass(frozen=True)
class Fresh:
    """A fresh copy of a seeded database, its own Dagster instance database, an emulator
    holding its customers and the project's meters, and what the source says is owed."""

    db_url: str
    dagster_url: str
    api_url: str
    meters: dict[str, RemoteMeter]
    owed: Counter[Key]


@contextmanager
def fresh_copy(server: str, source: Source, prefix: str) -> Iterator[Fresh]:
    with (
        cloned_database(server, source.url, prefix) as db_url,
        scratch_database(server, f"{prefix}_dagster", migrated=False) as dagster_url,
        emulator_with_customers(db_url) as api_url,
    ):
        billing = StripeBilling(API_KEY, api_url)
        meters = {m.event_name: billing.create_meter(m) for m in METERS}
        owed = source_totals(db_url, source.first, source.last)
        yield Fresh(db_url, dagster_url, api_url, meters, owed)


def run_scenario(
    server: str, source: Source, concurrency: int, *, faults: bool = False
) -> dict[str, Any]:
    """One fresh copy of `source`, a fresh emulator and Dagster instance, one run (two with
    faults: killed, then rerun), then the checks."""
    with fresh_copy(server, source, "bench_month") as fresh:
        db_url, api_url, meters, owed = fresh.db_url, fresh.api_url, fresh.meters, fresh.owed
        dagster_url = fresh.dagster_url
        spec = RunSpec(
            db_url,
            dagster_url,
            api_url,
            source.first.isoformat(),
            source.last.isoformat(),
            concurrency,
        )
        killed = None
        if faults:
            EmulatorControl(api_url).set_faults(
                error_429_rate=FAULTS.error_429_rate,
                error_500_rate=FAULTS.error_500_rate,
                drop_rate=FAULTS.drop_rate,
            )
            killed = _kill_mid_reporting(spec)
        with _launch(spec) as launched:
            run = _finish(launched)
        checks = check(db_url, api_url, meters, owed)
        if faults:
            run["request_count"] = EmulatorControl(api_url).request_count()
    sent = checks["ledger"].get("sent", 0)
    reporting = run["steps"].get(REPORTING_STEP)
    return {
        **run,
        **checks,
        "killed_run": killed,
        "organizations": source.organizations,
        "days": f"{source.first}..{source.last}",
        "readings": source.readings,
        "events_per_second": sent / run["seconds"],
        "reporting_events_per_second": sent / reporting if reporting else None,
    }


def _log_run(name: str, run: dict[str, Any]) -> None:
    print(
        f"{name}: {run['organizations']:,} orgs {run['days']}: {run['seconds']:.1f} s "
        f"(success {run['success']}), steps {_rounded(run['steps'])}, plan "
        f"{run['plan_seconds']}, peak RSS {run['peak_rss_mib']:.0f} MiB, "
        f"{run['events_per_second']:.0f} events/s; held {run['events_held']:,}, dup "
        f"{run['duplicates']}, differing {run['differing_keys']}, sent not held "
        f"{run['sent_not_held']}, open {run['open']}, ledger {run['ledger']}"
        + (f"; killed: {run['killed_run']}" if run["killed_run"] else ""),
        flush=True,
    )


def _rounded(steps: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in steps.items()}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    wanted = set(args.scenarios)
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    setup: dict[str, float] = {}
    with postgres_server() as server:
        facts = machine_facts(server)

        def repeat(name: str, source: Source, times: int, faults: bool = False) -> None:
            for _ in range(times):
                run = run_scenario(server, source, args.concurrency, faults=faults)
                runs[name].append(run)
                _log_run(name, run)

        if wanted & {"memory", "faults"}:
            with seeded(server, args.small_organizations, 1) as small:
                setup[f"seed {small.organizations:,} x 1 day"] = small.seed_seconds
                if "memory" in wanted:
                    repeat("memory", small, args.repeats)
                if "faults" in wanted:
                    repeat("faults", small, 1, faults=True)
        if wanted & {"day", "memory"}:
            with seeded(server, args.organizations, 1) as large:
                setup[f"seed {large.organizations:,} x 1 day"] = large.seed_seconds
                repeat("day", large, args.repeats)
        if "backfill" in wanted:
            with seeded(server, args.small_organizations, args.days) as history:
                setup[f"seed {history.organizations:,} x {args.days} days"] = history.seed_seconds
                repeat("backfill", history, 1)
    return {"facts": facts, "args": vars(args), "setup": setup, "runs": dict(runs)}


# ---- RESULTS.md ------------------------------------------------------------------------------


def _show(runs: Sequence[dict[str, Any]], key: str, fmt: str = "{:.1f}") -> str:
    values = [r[key] for r in runs if r.get(key) is not None]
    return Stats.of(values).show(fmt) if values else "-"


def _step(runs: Sequence[dict[str, Any]], prefix: str) -> str:
    values = [sum(v for k, v in r["steps"].items() if k.startswith(prefix)) for r in runs]
    return Stats.of(values).show("{:.1f}")


def _checks(runs: Sequence[dict[str, Any]]) -> list[object]:
    return [
        sum(r["duplicates"] for r in runs),
        sum(r["differing_keys"] + r["sent_not_held"] for r in runs),
        sum(r["open"] for r in runs),
    ]


def _section(data: dict[str, Any]) -> str:
    args = argparse.Namespace(**data["args"])
    runs = data["runs"]
    rows = []
    for name in ("day", "memory", "backfill", "faults"):
        if name not in runs:
            continue
        these = runs[name]
        last = these[-1]
        rows.append(
            [
                name,
                f"{last['organizations']:,}",
                last["days"],
                f"{last['ledger'].get('sent', 0):,}",
                _show(these, "seconds"),
                _step(these, "usage__"),
                _show(these, "plan_seconds"),
                _step(these, REPORTING_STEP),
                _show(these, "events_per_second", "{:.0f}"),
                _show(these, "peak_rss_mib", "{:.0f}"),
                *_checks(these),
            ]
        )
    lines = [
        "## 6. Month end: 100,000 organizations, a 35-day backfill, memory, faults (v2)",
        "",
        f"Machine: {facts_lines(data['facts'])}",
        "",
        "`python -m bench.month_end` - each row one Dagster run (`usage/*` + "
        "`stripe/meter_events`, `dg.materialize` on a dagster-postgres instance) in a fresh "
        'subprocess, `StripeResource(meter_event_api="v2", concurrency='
        f"{args.concurrency})`, emulator in its own process (no latency, no rate limit), a fresh "
        "copy of the seeded database (2 sensors and ~2 readings a sensor-day per organization, "
        f"all paying); {args.repeats} repeat(s) of `day` and `memory`, median (min-max). "
        "Seconds are the `dg.materialize` call; usage = both usage steps; planning = the "
        'reporting step\'s start to its "planned" log line; events/s = ledger rows sent / end '
        "to end. Duplicates: identifiers the emulator holds more than once. Losses: (customer, "
        "meter, day) whose value in the emulator (its own aggregation rules) differs from the "
        "value computed from the source rows, plus `sent` identifiers it does not hold. Open: "
        "ledger rows left pending, failed or leased.",
        "",
        table(
            [
                "scenario",
                "orgs",
                "days",
                "events sent",
                "end to end s",
                "usage s",
                "planning s",
                "reporting step s",
                "events/s",
                "peak RSS MiB",
                "duplicates",
                "losses",
                "open",
            ],
            rows,
        ),
        "",
        "Setup (not in the figures): "
        + "; ".join(f"{k} {v:.0f} s" for k, v in data["setup"].items())
        + " (`billing_demo` seed loader); customers created inside the emulator before it "
        "serves (`bench.seeded_emulator`); each run copies the seeded database "
        "(`CREATE DATABASE ... TEMPLATE`).",
    ]
    lines += ["", _targets(runs)]
    for run in runs.get("faults", []):
        killed = run["killed_run"]
        lines += [
            "",
            f"Faults: {FAULTS.error_500_rate:.0%} 500s, {FAULTS.error_429_rate:.0%} 429s, "
            f"{FAULTS.drop_rate:.0%} dropped connections; the run's process was killed "
            f"(SIGKILL: {killed['killed']}) with "
            f"{killed['sent_when_killed']:,} of {killed['ledger_rows']:,} ledger rows sent and "
            f"the emulator holding {killed['emulator_held_after_kill']:,} events "
            f"({killed['leased_after_kill']:,} rows left leased); the rerun of the same "
            f"partition took {run['seconds']:.1f} s (reporting step started "
            f"{run['reporting_attempts']} time(s); {'; '.join(run['freed']) or 'no leases freed'}"
            f"). Emulator answers over both runs: {run['request_count']}.",
        ]
    return "\n".join(lines)


def _targets(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Issue #13's targets, judged on the medians above."""

    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in runs.get(name, [])]
        return Stats.of(values).median if values else None

    rows = []
    if (day := median("day", "seconds")) is not None:
        rows.append(["one day, 100,000 orgs, < 60 s", f"{day:.1f} s", _verdict(day < 60)])
    if (backfill := median("backfill", "seconds")) is not None:
        rows.append(["35-day backfill, < 180 s", f"{backfill:.1f} s", _verdict(backfill < 180)])
    large, small = median("day", "peak_rss_mib"), median("memory", "peak_rss_mib")
    if large is not None and small is not None:
        rows.append(
            [
                "peak RSS the same at both sizes",
                f"{small:.0f} -> {large:.0f} MiB ({large / small:.2f}x)",
                _verdict(large / small < 1.1),
            ]
        )
    every = [r for these in runs.values() for r in these]
    failed = sum(r["duplicates"] + r["differing_keys"] + r["sent_not_held"] for r in every)
    rows.append(
        [
            "0 duplicates, 0 losses, every run",
            f"{failed} over {len(every)} runs",
            _verdict(not failed),
        ]
    )
    return table(["target", "measured", "verdict"], rows)


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def render(data: dict[str, Any]) -> str:
    """The RESULTS.md section for the JSON a full run wrote."""
    return _section(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 / 200 organizations, 3 days")
    parser.add_argument("--scenarios", type=lambda s: s.split(","), default=list(SCENARIOS))
    parser.add_argument("--organizations", type=int, default=100_000)
    parser.add_argument("--small-organizations", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(RunSpec(**json.loads(args.worker))), default=str))
        return
    sized(parser, args, SCENARIOS)
    data = measure(args)
    record("month_end", data, _section(data), quick=args.quick)


def sized(
    parser: argparse.ArgumentParser, args: argparse.Namespace, scenarios: Sequence[str]
) -> None:
    """`--quick` sizes, and a clear error for a scenario the benchmark does not have."""
    if args.quick:
        args.organizations, args.small_organizations, args.days = 1_000, 200, 3
    unknown = set(args.scenarios) - set(scenarios)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(scenarios)}")


if __name__ == "__main__":
    main()
