"""`billing-pipeline seed`: load a deterministic demo data set into the application tables."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {number}")
    return number


def register(subparsers: Any) -> None:
    seed = subparsers.add_parser(
        "seed",
        help="Load deterministic demo organizations, subscriptions, sensors and readings.",
        description="Load a realistic demo data set; the same arguments give the same rows. "
        "Runs the migrations first. All or nothing: a failure leaves the tables as they were.",
    )
    seed.add_argument("--seed", type=int, default=42, help="Random seed (default: 42).")
    seed.add_argument("--organizations", type=_positive_int, default=20, metavar="N")
    seed.add_argument("--days", type=_positive_int, default=7, metavar="N")
    seed.add_argument("--sensors-per-org", type=_positive_int, default=5, metavar="N")
    seed.add_argument("--readings-per-sensor-per-day", type=_positive_int, default=48, metavar="N")
    seed.add_argument(
        "--end-date",
        type=date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="Last seeded UTC day (default: yesterday, the last complete day).",
    )
    seed.add_argument(
        "--paid-fraction",
        type=_fraction,
        default=0.7,
        help="Share of organizations with a Stripe subscription (default: 0.7).",
    )
    seed.add_argument(
        "--late-fraction",
        type=_fraction,
        default=0.001,
        help="Share of readings ingested 1-3 days late (default: 0.001; never on the last day).",
    )
    seed.add_argument(
        "--replace",
        action="store_true",
        help="Truncate organizations, subscriptions, sensors and readings first; without it the "
        "command refuses to touch a database that has data.",
    )
    seed.set_defaults(handler=_seed)


def _seed(args: argparse.Namespace) -> int:
    from billing_demo.seed.generator import SeedOptions, yesterday_utc
    from billing_demo.seed.loader import SeedRefusedError, seed_database
    from billing_pipeline.db import migrate
    from billing_pipeline.db.database import database_url

    options = SeedOptions(
        seed=args.seed,
        organizations=args.organizations,
        days=args.days,
        sensors_per_org=args.sensors_per_org,
        readings_per_sensor_per_day=args.readings_per_sensor_per_day,
        end_date=args.end_date or yesterday_utc(),
        paid_fraction=args.paid_fraction,
        late_fraction=args.late_fraction,
    )
    with database_url() as url:
        migrate.upgrade(url)
        try:
            summary = seed_database(url, options, replace=args.replace, progress=True)
        except SeedRefusedError as error:
            print(f"seed refused: {error}", file=sys.stderr)
            return 1
    print(
        f"seeded {summary.start_date}..{summary.end_date}: {summary.organizations} organizations "
        f"({summary.subscriptions} paid, {summary.free_organizations} free), "
        f"{summary.sensors} sensors, {summary.readings} readings "
        f"({summary.late_readings} late)"
    )
    return 0
