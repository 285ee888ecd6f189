"""`billing-pipeline status` and `billing-pipeline stripe dry-run`: the operator's two questions.

"Is billing healthy?" (status, per day and meter) and "what would the next run send?" (dry run,
per day, meter and customer, with the reason). Neither writes the ledger nor sends an event.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from billing_pipeline.day_ranges import last_complete_days

if TYPE_CHECKING:
    from billing_pipeline.stripe_reporting.check_verdict import CheckReading

DEFAULT_DAYS = 7


def register(subparsers: Any, stripe_commands: Any) -> None:
    status = subparsers.add_parser(
        "status",
        help="Billing status per UTC day and meter: usage, billed, unbilled, ledger rows that "
        "need a look, and what Stripe holds; ends with a verdict.",
    )
    _window_options(status)
    status.add_argument(
        "--stripe",
        action="store_true",
        help="also read Stripe's daily meter summaries (read-only) instead of 'not reconciled'",
    )
    status.set_defaults(handler=_status)
    dry = stripe_commands.add_parser(
        "dry-run",
        help="Plan like a real run and list what it would send per day, meter and customer, "
        "and why; writes nothing and sends nothing.",
    )
    _window_options(dry)
    dry.set_defaults(handler=_dry_run)


def _window_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"the last N complete UTC days, up to yesterday (default: {DEFAULT_DAYS}); today is "
        "still going on: name it with --to",
    )
    parser.add_argument("--from", dest="first", type=date.fromisoformat, help="first day")
    parser.add_argument("--to", dest="last", type=date.fromisoformat, help="last day (included)")


def window(args: argparse.Namespace, today: date | None = None) -> tuple[date, date]:
    """[first_day, end_day) from `--from/--to`, or the last `--days` complete days (up to
    yesterday: today holds no complete data yet)."""
    today = today or datetime.now(UTC).date()
    if args.first is None and args.last is None:
        return last_complete_days(args.days, today)
    last = args.last or today - timedelta(days=1)
    first = args.first or last - timedelta(days=args.days - 1)
    if first > last:
        raise SystemExit(f"--from {first} is after --to {last}")
    return first, last + timedelta(days=1)


@contextmanager
def _engine() -> Iterator[Engine]:
    from billing_pipeline.db.database import database_url
    from billing_pipeline.db.engine import make_engine

    with database_url() as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def _status(args: argparse.Namespace) -> int:
    from billing_pipeline.stripe_reporting.cli import _client
    from billing_pipeline.stripe_reporting.status import billing_status, render_text
    from billing_pipeline.usage.meters import METERS

    first, end = window(args)
    stripe = _client() if args.stripe else None
    with _engine() as engine:
        lines = billing_status(engine, METERS, first, end, stripe)
    print(render_text(lines, first, end, _checks(first, end)))
    return 0


def _checks(first: date, end: date) -> CheckReading:
    """The checks' latest evaluations from the Dagster instance the daemon and webserver use:
    `DAGSTER_HOME` (and what its dagster.yaml reads, e.g. `DAGSTER_PG_URL`), or the running
    demo's (`config.setting`)."""
    import dagster as dg

    from billing_pipeline import config
    from billing_pipeline.stripe_reporting.check_verdict import (
        CheckReading,
        checked_days,
        failed_checks,
    )

    home = config.setting(config.DAGSTER_HOME)
    if home is None:
        return CheckReading(unread=f"{config.DAGSTER_HOME} is not set (Dagster's instance)")
    storage = config.setting(config.DAGSTER_PG_URL)
    if storage and not config.env(config.DAGSTER_PG_URL):
        os.environ[config.DAGSTER_PG_URL] = storage  # the demo's dagster.yaml reads it
    days = checked_days(first, end, datetime.now(UTC))
    try:
        with dg.DagsterInstance.from_config(home) as instance:
            return failed_checks(instance, days)
    except Exception as error:  # a wrong home or a storage down: said, never taken as passed
        return CheckReading(unread=f"{home}: {type(error).__name__}: {error}")


def _dry_run(args: argparse.Namespace) -> int:
    from billing_pipeline.stripe_reporting.assets import planned_days
    from billing_pipeline.stripe_reporting.cli import _client
    from billing_pipeline.stripe_reporting.dry_run import dry_run
    from billing_pipeline.stripe_reporting.dry_run_report import render_text
    from billing_pipeline.stripe_reporting.meter_sync import verify_meters
    from billing_pipeline.stripe_reporting.planning import MeterTarget
    from billing_pipeline.stripe_reporting.shared_meters import record_stripe_meters
    from billing_pipeline.usage.meters import METERS

    first, end = window(args)
    now = datetime.now(UTC)
    # The Stripe meters' kinds decide what a revision carries, as in a real run (a read).
    remote = verify_meters(_client(), METERS)
    targets = [MeterTarget(m, remote[m.name].event_time_window) for m in METERS]
    plan_first, plan_end = planned_days(first, end, now)
    with _engine() as engine:
        record_stripe_meters(engine, remote)  # as a run does before it plans
        # A run of these days (a backfill, the schedule) recomputes their usage first.
        result = dry_run(engine, targets, plan_first, plan_end, now, recomputed=(first, end))
    print(render_text(result, plan_first, plan_end))
    return 0
