"""`billing-pipeline dev`: run the whole system locally (what `make demo` calls)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    dev = subparsers.add_parser(
        "dev",
        help="Start Postgres, migrate, seed, and run Dagster (and Stripe parts) until Ctrl-C.",
        description="Start the whole system on embedded defaults: DATABASE_URL if set, otherwise "
        "an embedded PostgreSQL in $BILLING_PIPELINE_DATA_DIR/pgdata; stop it all on Ctrl-C.",
    )
    dev.add_argument("--host", default="127.0.0.1", help="Interface for the Dagster webserver.")
    dev.add_argument("--dagster-port", type=int, default=3000, help="Dagster webserver port.")
    dev.add_argument("--emulator-port", type=int, default=12111, help="Stripe emulator port.")
    dev.add_argument("--webhook-port", type=int, default=8787, help="Webhook receiver port.")
    dev.add_argument(
        "--alerts-port",
        type=int,
        default=8790,
        help="Port of the demo's alert sink (started when no BILLING_ALERTS_* sink is set).",
    )
    dev.add_argument(
        "--no-seed",
        dest="seed",
        action="store_false",
        help="Do not load demo data into an empty database.",
    )
    dev.add_argument(
        "--billing-only",
        action="store_true",
        help="Only migrate the pipeline's `billing` schema and never seed: for an existing "
        "application database in DATABASE_URL.",
    )
    dev.add_argument(
        "--workspace",
        type=Path,
        help="A Dagster workspace.yaml to load instead of the code server the demo starts.",
    )
    dev.set_defaults(handler=_dev)


def _dev(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from billing_demo.dev.supervisor import Options, run

    options = Options(
        host=args.host,
        dagster_port=args.dagster_port,
        emulator_port=args.emulator_port,
        webhook_port=args.webhook_port,
        alerts_port=args.alerts_port,
        seed=args.seed,
        billing_only=args.billing_only,
    )
    if args.workspace is not None:
        options = replace(options, workspace=args.workspace.resolve())
    return run(options)
