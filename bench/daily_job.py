"""Benchmark 7: the job the schedule launches, with its asset checks, on v2 at scale.

    python -m bench.daily_job [--quick] [--scenarios day,memory,backfill,replan]
        [--organizations 100000] [--small-organizations 10000] [--days 35]
        [--concurrency 8] [--repeats 1] [--skip-check NAME ...]

Benchmark 6 (`bench.month_end`) materializes the three assets without their asset checks. This
one runs what production runs: the `daily_billing` job of the code location
(`billing_pipeline.definitions`, so `usage/*`, `stripe/meter_events` and every asset check on
them, exactly as `dagster asset materialize --select 'group:usage or group:stripe'`, the
schedule and a backfill from the UI run them), with the resources bound from the environment the
way a deployment binds them: `DATABASE_URL`, `STRIPE_SECRET_KEY`, `STRIPE_API_BASE` and
`STRIPE_METER_EVENT_API=v2`. A range is one run with the partition-range tags (the assets'
single-run backfill policy), as the backfill daemon launches it.

Same-run baseline: every candidate run is paired with a run of the same three assets without
the checks (`dg.materialize`, the same resources), on its own fresh copy of the same seeded
database and its own fresh emulator, the two alternating; ratios are candidate / baseline.

Scenarios: `day` (yesterday at `--organizations`), `memory` (the same at
`--small-organizations`: peak RSS at both sizes), `backfill` (`--days` days ending yesterday at
`--small-organizations`), `replan` (after that backfill, the daily job for yesterday again with
nothing changed: what re-planning the whole window of unchanged days costs a daily run).

Stripe calls per step: the run's process records every HTTP request the official SDK makes
(method, path with ids replaced by `{id}`, time) and each is attributed to the step that was
running (STEP_START..end from the event log; the in-process executor runs one step at a time).
Duplicates, losses and open rows are checked as in benchmark 6 (`bench.month_end.check`).
`--skip-check stripe_reconciliation` leaves a check out of the candidate (for measuring the rest
while one is being rewritten); the tables say so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    OUT_DIR,
    Stats,
    facts_lines,
    machine_facts,
    peak_rss_mib,
    postgres_server,
    record,
    step_windows,
    table,
)
from bench.emulator import API_KEY
from bench.month_end import (
    RANGE_END,
    RANGE_START,
    REPORTING_STEP,
    Source,
    _rounded,
    _verdict,
    check,
    fresh_copy,
    seeded,
    sized,
)
from billing_pipeline.usage.meters import METERS

SCENARIOS = ("day", "memory", "backfill", "replan")
PARTIAL = OUT_DIR / "daily_job-partial.json"
JOB = "daily_billing"
CHECK_PREFIX = f"{REPORTING_STEP}_"
_ID = re.compile(r"/(mtr|cus|in|sub|evt|price|prod)_[A-Za-z0-9_]+")


# ---- the run, in its own process -------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    mode: str  # "job": daily_billing with its checks; "assets": the three assets alone
    db_url: str
    dagster_url: str
    api_url: str
    first: str
    last: str
    concurrency: int
    skip_checks: tuple[str, ...] = ()
    explain: bool = False


def _record_requests() -> list[tuple[float, str]]:
    """Every HTTP request the Stripe SDK makes in this process, with its start time."""
    import stripe

    calls: list[tuple[float, str]] = []
    original = stripe.RequestsClient.request

    def request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = _ID.sub(r"/\1_{id}", url.split("://", 1)[-1].split("/", 1)[-1].split("?")[0])
        calls.append((time.time(), f"{method.upper()} /{path}"))
        return original(self, method, url, *args, **kwargs)

    stripe.RequestsClient.request = request  # type: ignore[method-assign]
    return calls


def _calls_by_step(
    calls: Sequence[tuple[float, str]], windows: dict[str, tuple[float, float]]
) -> dict[str, dict[str, int]]:
    by_step: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for at, call in calls:
        step = next((k for k, (a, b) in windows.items() if a <= at <= b), "outside steps")
        by_step[step][call] += 1
    return {step: dict(counts) for step, counts in by_step.items()}


def _explain_checks(db_url: str, name: str) -> None:
    """EXPLAIN ANALYZE of the attribution statements of `unbilled_usage` and
    `subscriptions_sharing_a_meter` on the run's database as the run left it, to
    bench/out/daily_job-explain-NAME.txt (for reading a slow check's plan)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    from billing_pipeline.db.engine import make_engine
    from billing_pipeline.stripe_reporting.attribution import (
        attribution_params,
        customer_parts_cte,
        organization_parts_sql,
    )
    from billing_pipeline.stripe_reporting.ledger import STRIPE_WINDOW, planned_windows
    from billing_pipeline.stripe_reporting.shared_meters import _HELD_SQL

    now = datetime.now(UTC)
    first, end = (now - STRIPE_WINDOW).date(), now.date() + timedelta(days=1)
    engine = make_engine(db_url, pool_size=1)
    out = []
    with engine.connect() as connection:
        windows = planned_windows(connection)
        for meter in METERS:
            params = {
                **attribution_params(meter, windows.get(meter.name), first, end),
                "now": now,
                "last": meter.aggregation == "last",
                "sent": "sent",
            }
            statements = {
                "unbilled_usage": f"SELECT * FROM ({organization_parts_sql(meter)}) AS o "
                "WHERE customer IS NULL AND value <> 0 AND part_end <= :now",
                "subscriptions_sharing_a_meter": _HELD_SQL.format(parts=customer_parts_cte(meter)),
            }
            for check_name, sql in statements.items():
                began = time.perf_counter()
                plan = connection.execute(
                    text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"), params
                ).scalars()
                out += [f"== {check_name} / {meter.name}: {time.perf_counter() - began:.2f} s"]
                out += list(plan)
    engine.dispose()
    (OUT_DIR / f"daily_job-explain-{name}.txt").write_text("\n".join(out))


def _worker(spec: RunSpec) -> dict[str, Any]:
    """One run, resources bound from the environment as a deployment binds them."""
    os.environ.update(
        {
            "DATABASE_URL": spec.db_url,
            "STRIPE_SECRET_KEY": API_KEY,
            "STRIPE_API_BASE": spec.api_url,
            "STRIPE_METER_EVENT_API": "v2",
        }
    )
    import dagster as dg

    from bench.month_end import _reporting_logs
    from billing_pipeline.definitions import defs
    from billing_pipeline.resources import StripeResource

    calls = _record_requests()
    resources = {**(defs.resources or {}), "stripe": StripeResource(concurrency=spec.concurrency)}
    one_day = spec.first == spec.last
    tags = {} if one_day else {RANGE_START: spec.first, RANGE_END: spec.last}
    partition_key = spec.first if one_day else None
    storage = {"storage": {"postgres": {"postgres_url": spec.dagster_url}}}
    with dg.instance_for_test(overrides=storage) as instance:
        began = time.perf_counter()
        if spec.mode == "job" and not spec.skip_checks:
            job = defs.resolve_job_def(JOB)
            result = job.execute_in_process(
                instance=instance,
                resources=resources,
                tags=tags,
                raise_on_error=False,
                partition_key=partition_key,
            )
        else:
            selection: dg.AssetSelection = dg.AssetSelection.groups("usage", "stripe")
            if spec.mode == "assets":
                selection = selection.without_checks()
            elif spec.skip_checks:
                reporting = dg.AssetKey(["stripe", "meter_events"])
                selection = selection - dg.AssetSelection.checks(
                    *(dg.AssetCheckKey(reporting, name) for name in spec.skip_checks)
                )
            result = dg.materialize(
                [*(defs.assets or ()), *(defs.asset_checks or ())],  # type: ignore[list-item]
                selection=selection,
                instance=instance,
                resources=resources,
                tags=tags,
                raise_on_error=False,
                partition_key=partition_key,
            )
        seconds = time.perf_counter() - began
        windows = step_windows(instance, result.run_id)
        logs = _reporting_logs(instance, result.run_id)
        failures = [f"{e.step_key}: {e.message}" for e in result.all_events if e.is_failure]
    peak = peak_rss_mib()
    if spec.explain:
        _explain_checks(spec.db_url, spec.mode)
    return {
        "success": result.success,
        "failures": failures[:5],
        "seconds": seconds,
        "steps": {k: b - a for k, (a, b) in windows.items()},
        "calls": _calls_by_step(calls, windows),
        **logs,
        "peak_rss_mib": peak,
    }


def _run(spec: RunSpec) -> dict[str, Any]:
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.run(
            [sys.executable, "-m", "bench.daily_job", "--worker", json.dumps(asdict(spec))],
            stdout=stdout,
            stderr=stderr,
            check=False,
        )
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / f"daily_job-last-{spec.mode}.log").write_text(err)
    if process.returncode != 0:
        raise RuntimeError(f"the run's process failed ({process.returncode}):\n{err[-4000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if not result["success"]:
        print(f"the Dagster run failed: {result['failures']}", file=sys.stderr)
    return result


# ---- scenarios -------------------------------------------------------------------------------


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    """Steps grouped (usage, reporting, each check) and Stripe calls: the reporting step's,
    and the checks' per step."""
    steps: dict[str, float] = run["steps"]
    calls: dict[str, dict[str, int]] = run["calls"]
    check_steps = {k: v for k, v in steps.items() if k.startswith(CHECK_PREFIX)}
    return {
        "usage_seconds": sum(v for k, v in steps.items() if k.startswith("usage__")),
        "reporting_seconds": steps.get(REPORTING_STEP),
        "checks_seconds": sum(check_steps.values()),
        "check_seconds": {k.removeprefix(CHECK_PREFIX): v for k, v in check_steps.items()},
        "check_calls": {
            k.removeprefix(CHECK_PREFIX): sum(v.values())
            for k, v in calls.items()
            if k.startswith(CHECK_PREFIX)
        },
        "reporting_calls": sum(calls.get(REPORTING_STEP, {}).values()),
    }


def run_pair(
    server: str, source: Source, args: argparse.Namespace, *, then_replan: bool = False
) -> dict[str, Any]:
    """The candidate (the job, checks included) and the baseline (assets alone), each on a fresh
    copy of `source` with a fresh emulator and Dagster instance, alternating which goes first."""
    out: dict[str, Any] = {}
    order = ("job", "assets") if args.repeat_index % 2 == 0 else ("assets", "job")
    for mode in order:
        with fresh_copy(server, source, "bench_daily") as fresh:
            db_url, api_url, meters, owed = fresh.db_url, fresh.api_url, fresh.meters, fresh.owed
            spec = RunSpec(
                mode,
                db_url,
                fresh.dagster_url,
                api_url,
                source.first.isoformat(),
                source.last.isoformat(),
                args.concurrency,
                tuple(args.skip_check) if mode == "job" else (),
                args.explain and mode == "job",
            )
            run = _run(spec)
            run.update(_summary(run), **check(db_url, api_url, meters, owed))
            run["days"] = f"{source.first}..{source.last}"
            run["day_count"] = (source.last - source.first).days + 1
            run["organizations"] = source.organizations
            out[mode] = run
            _log(mode, run)
            if then_replan and mode == "job":
                again = RunSpec(**{**asdict(spec), "first": spec.last})
                replan = _run(again)
                replan.update(_summary(replan), **check(db_url, api_url, meters, owed))
                replan["days"] = f"{spec.last} (after {source.first}..{source.last})"
                replan["day_count"] = 1
                replan["organizations"] = source.organizations
                out["replan"] = replan
                _log("replan", replan)
    return out


def _log(name: str, run: dict[str, Any]) -> None:
    print(
        f"{name}: {run['organizations']:,} orgs {run['days']}: {run['seconds']:.1f} s "
        f"(success {run['success']}), usage {run['usage_seconds']:.1f} s, reporting "
        f"{run['reporting_seconds'] or 0:.1f} s (plan {run['plan_seconds']}), checks "
        f"{run['checks_seconds']:.1f} s {_rounded(run['check_seconds'])}, Stripe calls by "
        f"checks {run['check_calls']}, peak {run['peak_rss_mib']:.0f} MiB; sent "
        f"{run['ledger'].get('sent', 0):,}, dup {run['duplicates']}, differing "
        f"{run['differing_keys']}, sent not held {run['sent_not_held']}, open {run['open']}",
        flush=True,
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    wanted = set(args.scenarios)
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    setup: dict[str, float] = {}
    with postgres_server() as server:
        facts = machine_facts(server)

        def repeat(name: str, source: Source, times: int, then_replan: bool = False) -> None:
            for index in range(times):
                args.repeat_index = index
                pair = run_pair(server, source, args, then_replan=then_replan)
                runs[name].append({"job": pair["job"], "assets": pair["assets"]})
                if "replan" in pair:
                    runs["replan"].append({"job": pair["replan"], "assets": pair["job"]})
                # Kept as it goes: `--render` makes the section from an interrupted run.
                partial = {"facts": facts, "args": vars(args), "setup": setup, "runs": runs}
                PARTIAL.write_text(json.dumps(partial, indent=2, default=str))

        if "memory" in wanted:
            with seeded(server, args.small_organizations, 1) as small:
                setup[f"seed {small.organizations:,} x 1 day"] = small.seed_seconds
                repeat("memory", small, args.repeats)
        if "day" in wanted:
            with seeded(server, args.organizations, 1) as large:
                setup[f"seed {large.organizations:,} x 1 day"] = large.seed_seconds
                repeat("day", large, args.repeats)
        if wanted & {"backfill", "replan"}:
            with seeded(server, args.small_organizations, args.days) as history:
                setup[f"seed {history.organizations:,} x {args.days} days"] = history.seed_seconds
                repeat("backfill", history, 1, then_replan="replan" in wanted)
    return {"facts": facts, "args": vars(args), "setup": setup, "runs": dict(runs)}


# ---- RESULTS.md ------------------------------------------------------------------------------


def _stats(values: Sequence[float], fmt: str = "{:.1f}") -> str:
    return Stats.of(list(values)).show(fmt) if values else "-"


def _ratio(pairs: Sequence[dict[str, Any]], key: str) -> str:
    values = [p["job"][key] / p["assets"][key] for p in pairs if p["assets"].get(key)]
    return _stats(values, "{:.2f}x")


def _section(data: dict[str, Any]) -> str:
    args = argparse.Namespace(**data["args"])
    runs = data["runs"]
    rows = []
    for name in ("day", "memory", "backfill", "replan"):
        if name not in runs:
            continue
        pairs = runs[name]
        jobs = [p["job"] for p in pairs]
        last = jobs[-1]
        check_calls = Counter[str]()
        for job in jobs:
            check_calls.update(job["check_calls"])
        days = sum(j["day_count"] for j in jobs)
        rows.append(
            [
                name,
                f"{last['organizations']:,}",
                last["days"],
                f"{last['ledger'].get('sent', 0):,}",
                _stats([j["seconds"] for j in jobs]),
                _ratio(pairs, "seconds"),
                _stats([j["plan_seconds"] or 0 for j in jobs]),
                _stats([j["reporting_seconds"] or 0 for j in jobs]),
                _stats([j["checks_seconds"] for j in jobs]),
                f"{sum(check_calls.values()) / days:.0f}",
                _stats([j["peak_rss_mib"] for j in jobs], "{:.0f}"),
                _ratio(pairs, "peak_rss_mib"),
                sum(j["duplicates"] for j in jobs),
                sum(j["differing_keys"] + j["sent_not_held"] for j in jobs),
                sum(j["open"] for j in jobs),
            ]
        )
    skipped = (
        f" Left out of the candidate: {', '.join(args.skip_check)} (`--skip-check`)."
        if args.skip_check
        else ""
    )
    lines = [
        "## 7. The daily job with its checks: `daily_billing` at 10,000 and 100,000 organizations",
        "",
        f"Machine: {facts_lines(data['facts'])}",
        "",
        "`python -m bench.daily_job` - candidate: the code location's `daily_billing` job "
        "(`usage/*`, `stripe/meter_events` and every check on them), resources bound from the "
        "environment with `STRIPE_METER_EVENT_API=v2`, `concurrency="
        f"{args.concurrency}`; baseline (same run, alternating, fresh copies): the three assets "
        "without checks. Each run a fresh subprocess on a fresh copy of the seeded database "
        "and a fresh emulator (no latency, no rate limit); `replan` reruns yesterday on the "
        "backfill's database and emulator (its baseline is the backfill run). "
        f"{args.repeats} repeat(s) of `day` and `memory`, median (min-max).{skipped}",
        "",
        table(
            [
                "scenario",
                "orgs",
                "days",
                "events sent",
                "end to end s",
                "vs no checks",
                "planning s",
                "reporting step s",
                "checks s",
                "Stripe calls by checks per day",
                "peak RSS MiB",
                "RSS vs no checks",
                "duplicates",
                "losses",
                "open",
            ],
            rows,
        ),
        "",
        "Per check (seconds, Stripe calls), last run of each scenario:",
        "",
    ]
    check_rows = []
    for name, pairs in runs.items():
        job = pairs[-1]["job"]
        for check_name, seconds in sorted(job["check_seconds"].items()):
            check_rows.append(
                [name, check_name, f"{seconds:.2f}", job["check_calls"].get(check_name, 0)]
            )
    lines += [table(["scenario", "check", "seconds", "Stripe calls"], check_rows), ""]
    lines += [
        "Setup (not in the figures): "
        + "; ".join(f"{k} {v:.0f} s" for k, v in data["setup"].items()),
        "",
        _targets(runs),
    ]
    return "\n".join(lines)


def _targets(runs: dict[str, list[dict[str, Any]]]) -> str:
    def median(name: str, key: str) -> float | None:
        values = [p["job"][key] for p in runs.get(name, [])]
        return Stats.of(values).median if values else None

    rows = []
    if (day := median("day", "seconds")) is not None:
        rows.append(
            [
                "one day at the large size, checks included, < 60 s",
                f"{day:.1f} s",
                _verdict(day < 60),
            ]
        )
    if (backfill := median("backfill", "seconds")) is not None:
        rows.append(
            [
                "range backfill at the small size, < 180 s",
                f"{backfill:.1f} s",
                _verdict(backfill < 180),
            ]
        )
    large, small = median("day", "peak_rss_mib"), median("memory", "peak_rss_mib")
    if large is not None and small is not None:
        rows.append(
            [
                "peak RSS the same at both sizes",
                f"{small:.0f} -> {large:.0f} MiB ({large / small:.2f}x)",
                _verdict(large / small < 1.1),
            ]
        )
    every = [run for pairs in runs.values() for p in pairs for run in p.values()]
    failed = sum(r["duplicates"] + r["differing_keys"] + r["sent_not_held"] for r in every)
    rows.append(
        [
            "0 duplicates, 0 losses, every run",
            f"{failed} over {len(every)} runs",
            _verdict(not failed),
        ]
    )
    return table(["target", "measured", "verdict"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 / 200 organizations, 3 days")
    parser.add_argument("--scenarios", type=lambda s: s.split(","), default=list(SCENARIOS))
    parser.add_argument("--organizations", type=int, default=100_000)
    parser.add_argument("--small-organizations", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-check", action="append", default=[], metavar="NAME")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="after each candidate run, EXPLAIN ANALYZE the attribution checks' statements "
        "(bench/out/daily_job-explain-job.txt)",
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="rewrite RESULTS.md section 7 from a run's JSON (bench/out/daily_job.json, or "
        "daily_job-partial.json of an interrupted run) instead of measuring",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        data = json.loads(Path(args.render).read_text())
        record("daily_job", data, _section(data), quick=False)
        return
    if args.worker:
        spec = json.loads(args.worker)
        spec["skip_checks"] = tuple(spec["skip_checks"])
        print(json.dumps(_worker(RunSpec(**spec)), default=str))
        return
    sized(parser, args, SCENARIOS)
    data = measure(args)
    record("daily_job", data, _section(data), quick=args.quick)


if __name__ == "__main__":
    main()
