"""Benchmark 4: a 35-day range backfill for 1,000 organizations, end to end through Dagster.

    python -m bench.backfill [--quick] [--repeats 1] [--latency-ms 0] [--concurrency 50]

Seeds 1,000 organizations x 35 days (2 sensors each, 24 readings per sensor-day, 70% paying),
gives every subscription a customer in the Stripe emulator (own process), then materializes
`usage/*` and `stripe/meter_events` for the whole range in ONE run with `dg.materialize` and the
partition-range tags `dagster/asset_partition_range_start|end`, which is exactly the run a
backfill launches under the assets' `BackfillPolicy.single_run()`. The instance is a real one on
dagster-postgres (its own scratch database). Timed end to end; per-step durations come from
Dagster's step events. Afterwards: every ledger row `sent` or `expired` (none pending
or failed), and the emulator holds each sent identifier exactly once.

Each repeat needs fresh identifiers, so it uses fresh databases and a fresh emulator.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import dagster as dg

from bench.common import (
    Stats,
    facts_lines,
    ledger_outcome,
    machine_facts,
    postgres_server,
    record,
    scratch_database,
    step_windows,
    table,
)
from bench.emulator import API_KEY, control, emulator_process
from bench.reporting import attach_customers
from billing_demo.seed.generator import SeedOptions
from billing_demo.seed.loader import seed_database
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.assets import build_reporting_asset
from billing_pipeline.usage.assets import build_usage_assets
from billing_pipeline.usage.meters import METERS

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Wall time of each step (`step_windows`: STEP_START to its end in the event log)."""
    return {step: end - start for step, (start, end) in step_windows(instance, run_id).items()}


def run_once(
    server: str, organizations: int, days: int, latency_ms: int, concurrency: int
) -> dict[str, Any]:
    options = SeedOptions(
        organizations=organizations, sensors_per_org=2, days=days, readings_per_sensor_per_day=24
    )
    with (
        scratch_database(server, "bench_backfill") as db_url,
        scratch_database(server, "bench_dagster", migrated=False) as dagster_url,
        emulator_process() as api_url,
    ):
        seeded = seed_database(db_url, options)
        attach_customers(db_url, api_url)
        billing = StripeBilling(API_KEY, api_url)
        for meter in METERS:
            billing.create_meter(meter)
        control(api_url).set_faults(latency_ms=latency_ms)
        with dg.instance_for_test(
            overrides={"storage": {"postgres": {"postgres_url": dagster_url}}}
        ) as instance:
            began = time.perf_counter()
            result = dg.materialize(
                [*build_usage_assets(), build_reporting_asset()],
                instance=instance,
                resources={
                    # Leased rows need no connection per call; the pool stays small.
                    "postgres": PostgresResource(
                        database_url=db_url, pool_size=(concurrency + 4) // 2
                    ),
                    "stripe": StripeResource(
                        secret_key=API_KEY, api_base=api_url, concurrency=concurrency
                    ),
                },
                tags={
                    RANGE_START: options.start_date.isoformat(),
                    RANGE_END: options.end_date.isoformat(),
                },
            )
            seconds = time.perf_counter() - began
            assert result.success
            steps = _step_seconds(instance, result.run_id)
        ledger = ledger_outcome(db_url)
        received = Counter(e["identifier"] for e in control(api_url).meter_events())
    return {
        "readings": seeded.readings,
        "days": f"{options.start_date}..{options.end_date}",
        "seconds": seconds,
        "steps": steps,
        "ledger": dict(ledger.statuses),
        "duplicates": sum(n - 1 for n in received.values()),
        "lost": len(ledger.sent - set(received)),
        "open": ledger.statuses["pending"] + ledger.statuses["failed"],
    }


def _section(runs: list[dict[str, Any]], facts: dict[str, str], args: Any) -> str:
    seconds = Stats.of([r["seconds"] for r in runs])
    step_rows = [
        [step, Stats.of([r["steps"].get(step, 0.0) for r in runs]).show("{:.1f}")]
        for step in sorted(runs[0]["steps"])
    ]
    last = runs[-1]
    sent = last["ledger"].get("sent", 0)
    return "\n".join(
        [
            "## 4. Backfill: 35 days x 1,000 organizations through Dagster",
            "",
            f"Machine: {facts_lines(facts)}",
            "",
            f"`python -m bench.backfill` - {args.organizations:,} organizations, {args.days} "
            f"days ({last['days']}), {last['readings']:,} readings; one run over the range "
            "(`dg.materialize` with `dagster/asset_partition_range_start|end`, as the "
            "single-run backfill policy launches it) on a dagster-postgres instance; emulator "
            f"latency {args.latency_ms} ms, no rate limit; sender concurrency "
            f"{args.concurrency}; {len(runs)} run(s), median (min-max).",
            "",
            table(
                ["end to end s", "ledger rows", "sent events/s", "duplicates", "lost", "open"],
                [
                    [
                        seconds.show("{:.1f}"),
                        ", ".join(f"{k} {v:,}" for k, v in sorted(last["ledger"].items())),
                        f"{sent / seconds.median:.0f}",
                        sum(r["duplicates"] for r in runs),
                        sum(r["lost"] for r in runs),
                        sum(r["open"] for r in runs),
                    ]
                ],
            ),
            "",
            table(["step", "seconds"], step_rows),
        ]
    )


def render(data: dict[str, Any]) -> str:
    """The RESULTS.md section for the JSON a full run wrote."""
    return _section(data["runs"], data["facts"], argparse.Namespace(**data["args"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 organizations, 5 days")
    parser.add_argument("--organizations", type=int, default=1_000)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--latency-ms", type=int, default=0)
    # Calls in flight hold no database connection (rows are leased); Stripe bounds concurrency.
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    if args.quick:
        args.organizations, args.days, args.repeats = 50, 5, 1
    with postgres_server() as server:
        facts = machine_facts(server)
        runs = []
        for _ in range(args.repeats):
            run = run_once(server, args.organizations, args.days, args.latency_ms, args.concurrency)
            runs.append(run)
            print(
                f"backfill: {run['seconds']:.1f} s, ledger {run['ledger']}, "
                f"dup {run['duplicates']}, lost {run['lost']}, steps {run['steps']}",
                flush=True,
            )
    record(
        "backfill",
        {"facts": facts, "args": vars(args), "runs": runs},
        _section(runs, facts, args),
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
