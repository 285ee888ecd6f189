"""Benchmark 1: one day's usage aggregation, the project's meter assets against pandas.

    python -m bench.aggregation [--quick] [--repeats N] [--sizes 1000000,10000000]

For each size, a scratch database is seeded with one UTC day of readings (1,000 organizations x
20 sensors, readings spread evenly over the sensors). Every measurement runs in a fresh
subprocess, alternating candidates, so peak RSS (ru_maxrss) belongs to one measurement only:

- `asset`: the real `usage/*` assets materialized with `dg.materialize` for the day's partition
  (includes Dagster's in-process run overhead and its import footprint in memory);
- `sql`: `refresh_daily_usage` for both meters, the same work without Dagster around it;
- `pandas`: the baseline a team would write: `pd.read_sql` of the day's readings and the
  sensors, merge, `groupby().size()`.

Every candidate's per-meter (rows, total) must equal the project's, or the run fails.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text

from bench.common import (
    Stats,
    facts_lines,
    machine_facts,
    peak_rss_mib,
    postgres_server,
    record,
    run_worker,
    scratch_database,
    table,
)

ORGANIZATIONS = 1_000
SENSORS_PER_ORG = 20
FULL_SIZES = (1_000_000, 10_000_000)
QUICK_SIZES = (100_000,)
YIELD = 0.86
CANDIDATES = ("asset", "sql", "pandas")


def _window(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _checksum_from_table(url: str, day: date) -> dict[str, list[int]]:
    from billing_pipeline.db.engine import make_engine

    engine = make_engine(url, pool_size=1)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT meter, count(*), coalesce(sum(value), 0) FROM billing.daily_usage "
                "WHERE day = :day GROUP BY meter ORDER BY meter"
            ),
            {"day": day},
        ).all()
    engine.dispose()
    return {meter: [int(n), int(total)] for meter, n, total in rows}


def _work_sql(url: str, day: date) -> dict[str, list[int]]:
    from billing_pipeline.db.engine import make_engine
    from billing_pipeline.usage.daily_usage import refresh_daily_usage
    from billing_pipeline.usage.meters import METERS

    engine = make_engine(url, pool_size=1)
    start, end = _window(day)
    per_meter = {meter.name: refresh_daily_usage(engine, meter, start, end) for meter in METERS}
    engine.dispose()
    return {
        name: [sum(d.rows for d in days.values()), sum(d.total for d in days.values())]
        for name, days in sorted(per_meter.items())
    }


def _work_asset(url: str, day: date) -> dict[str, list[int]]:
    import dagster as dg

    from billing_pipeline.resources import PostgresResource
    from billing_pipeline.usage.assets import build_usage_assets

    result = dg.materialize(
        build_usage_assets(),
        partition_key=day.isoformat(),
        resources={"postgres": PostgresResource(database_url=url)},
    )
    assert result.success
    return _checksum_from_table(url, day)


def _work_pandas(url: str, day: date) -> dict[str, list[int]]:
    """What a team would write without the pipeline: pull the day into a DataFrame, group it."""
    import pandas as pd

    from billing_pipeline.db.engine import make_engine

    engine = make_engine(url, pool_size=1)
    start, end = _window(day)
    with engine.connect() as connection:
        readings = pd.read_sql(
            text(
                "SELECT sensor_id, recorded_at FROM temperature_readings "
                "WHERE recorded_at >= :start AND recorded_at < :end"
            ),
            connection,
            params={"start": start, "end": end},
        )
        sensors = pd.read_sql(
            text("SELECT id, organization_id, created_at, deactivated_at FROM sensors"),
            connection,
        )
    engine.dispose()
    merged = readings.merge(sensors[["id", "organization_id"]], left_on="sensor_id", right_on="id")
    readings_per_org = merged.groupby("organization_id").size()
    existing = sensors[sensors["created_at"] < end]
    active = existing["deactivated_at"].isna() | (existing["deactivated_at"] >= end)
    active_per_org = active.groupby(existing["organization_id"]).sum()
    return {
        "active_sensors": [len(active_per_org), int(active_per_org.sum())],
        "temperature_readings": [len(readings_per_org), int(readings_per_org.sum())],
    }


def worker(candidate: str, url: str, day: date) -> None:
    """One measurement in this (fresh) process; prints a JSON line for the parent."""
    began = time.perf_counter()
    if candidate == "asset":
        checksum = _work_asset(url, day)
    elif candidate == "pandas":
        checksum = _work_pandas(url, day)
    else:
        checksum = _work_sql(url, day)
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "checksum": checksum}))


def _seed(url: str, readings: int) -> tuple[date, int]:
    from billing_demo.seed.generator import SeedOptions
    from billing_demo.seed.loader import seed_database

    organizations = ORGANIZATIONS if readings >= 1_000_000 else max(10, readings // 1_000)
    # Sensor history (created or retired mid-range) and dropouts leave ~87% of the nominal
    # readings; scale up so the day holds at least the requested number.
    per_sensor = max(1, math.ceil(readings / (organizations * SENSORS_PER_ORG * YIELD)))
    options = SeedOptions(
        organizations=organizations,
        sensors_per_org=SENSORS_PER_ORG,
        days=1,
        readings_per_sensor_per_day=per_sensor,
    )
    summary = seed_database(url, options)
    return options.end_date, summary.readings


def _explain(url: str, day: date) -> str:
    """The plan of the readings meter's SQL, to say where the time goes."""
    from billing_pipeline.db.engine import make_engine
    from billing_pipeline.usage.meters import TEMPERATURE_READINGS

    engine = make_engine(url, pool_size=1)
    start, end = _window(day)
    with engine.connect() as connection:
        plan = connection.execute(
            text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {TEMPERATURE_READINGS.sql}"),
            {"start": start, "end": end},
        ).scalars()
        lines = list(plan)
    engine.dispose()
    return "\n".join(lines)


def _measure_size(url: str, readings: int, repeats: int) -> dict[str, Any]:
    day, seeded = _seed(url, readings)
    print(f"seeded {seeded:,} readings for {day}", flush=True)
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in CANDIDATES}
    # Warm the cache once so the first candidate does not pay for reading the table from disk.
    run_worker("bench.aggregation", "--worker", "sql", "--url", url, "--day", day.isoformat())
    for repeat in range(repeats):
        order = CANDIDATES if repeat % 2 == 0 else tuple(reversed(CANDIDATES))
        for candidate in order:
            sample = run_worker(
                "bench.aggregation", "--worker", candidate, "--url", url, "--day", day.isoformat()
            )
            samples[candidate].append(sample)
            print(f"  {candidate:>10}: {sample['seconds']:.2f} s, {sample['peak_rss_mib']:.0f} MiB")
    reference = samples["sql"][0]["checksum"]
    for candidate, runs in samples.items():
        for sample in runs:
            if sample["checksum"] != reference:
                raise AssertionError(f"{candidate} disagrees: {sample['checksum']} != {reference}")
    return {
        "readings": seeded,
        "day": day.isoformat(),
        "checksum": reference,
        "seconds": {c: Stats.of([s["seconds"] for s in r]).as_dict() for c, r in samples.items()},
        "peak_rss_mib": {
            c: Stats.of([s["peak_rss_mib"] for s in r]).as_dict() for c, r in samples.items()
        },
        "plan": _explain(url, day),
    }


def _section(results: list[dict[str, Any]], facts: dict[str, str], repeats: int) -> str:
    rows = []
    for result in results:
        seconds = {c: Stats(**_stats_args(result["seconds"][c])) for c in CANDIDATES}
        memory = {c: Stats(**_stats_args(result["peak_rss_mib"][c])) for c in CANDIDATES}
        for candidate in CANDIDATES:
            ratio = seconds["pandas"].median / seconds[candidate].median
            rows.append(
                [
                    f"{result['readings']:,}",
                    candidate,
                    seconds[candidate].show(),
                    memory[candidate].show("{:.0f}"),
                    f"{ratio:.1f}x" if candidate != "pandas" else "1.0x (baseline)",
                ]
            )
    biggest = results[-1]
    return "\n".join(
        [
            "## 1. Aggregation: one day's partition",
            "",
            f"Machine: {facts_lines(facts)}",
            "",
            f"`python -m bench.aggregation` — {repeats} repeats per candidate, each in a fresh "
            "subprocess, candidates alternating; median (min-max). Peak RSS is the worker "
            "process's `ru_maxrss`; for `asset`/`sql` the aggregation itself runs "
            "inside PostgreSQL (bounded by `work_mem`), so the Python figure is flat by design. "
            "Speed-up = pandas median / candidate median.",
            "",
            table(
                ["readings in the day", "candidate", "seconds", "peak RSS MiB", "vs pandas"], rows
            ),
            "",
            f"Plan of the readings meter's SQL at {biggest['readings']:,} readings "
            "(`EXPLAIN ANALYZE`, after the runs):",
            "",
            "```",
            biggest["plan"],
            "```",
        ]
    )


def _stats_args(data: dict[str, float]) -> dict[str, Any]:
    return {"median": data["median"], "low": data["min"], "high": data["max"], "n": data["n"]}


def render(data: dict[str, Any]) -> str:
    """The RESULTS.md section for the JSON a full run wrote."""
    return _section(data["results"], data["facts"], data["repeats"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k readings, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", help="comma-separated reading counts (default 1M,10M)")
    parser.add_argument("--worker", choices=CANDIDATES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--day", type=date.fromisoformat, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.url, args.day)
        return
    sizes = (
        tuple(int(s) for s in args.sizes.split(","))
        if args.sizes
        else (QUICK_SIZES if args.quick else FULL_SIZES)
    )
    repeats = 1 if args.quick else args.repeats
    with postgres_server() as server:
        facts = machine_facts(server)
        results = []
        for size in sizes:
            with scratch_database(server, "bench_agg") as url:
                results.append(_measure_size(url, size, repeats))
    record(
        "aggregation",
        {"facts": facts, "repeats": repeats, "results": results},
        _section(results, facts, repeats),
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
