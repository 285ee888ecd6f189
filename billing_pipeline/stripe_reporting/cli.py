"""`billing-pipeline stripe …`: Stripe setup as code."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    stripe_parser = subparsers.add_parser(
        "stripe", help="Set up the Stripe account the pipeline bills through."
    )
    commands = stripe_parser.add_subparsers(dest="stripe_command", required=True, metavar="ACTION")
    sync = commands.add_parser(
        "sync-meters",
        help="Create the Stripe meters the declarations need; change nothing that already matches.",
    )
    sync.set_defaults(handler=_sync_meters)
    customers = commands.add_parser(
        "demo-customers",
        help="Test mode only: create a Stripe customer for every subscription whose customer "
        "Stripe does not know (seeded demo data), and store the new ids.",
    )
    customers.set_defaults(handler=_demo_customers)
    from billing_pipeline.stripe_reporting import status_cli

    status_cli.register(subparsers, commands)


def _client() -> Any:
    """The Stripe resource the code location binds, with the environment's values."""
    from billing_pipeline import config
    from billing_pipeline.resources import StripeResource

    resource = StripeResource(
        secret_key=config.env(config.STRIPE_SECRET_KEY),
        api_base=config.env(config.STRIPE_API_BASE),
    )
    client = resource.client()
    if client is None:
        raise SystemExit("STRIPE_SECRET_KEY is not set (for the emulator any sk_test_… key works)")
    return client


def _sync_meters(args: argparse.Namespace) -> int:
    from billing_pipeline.stripe_reporting.meter_sync import MeterMismatchError, sync_meters
    from billing_pipeline.usage.meters import METERS

    try:
        result = sync_meters(_client(), METERS)
    except MeterMismatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"meters created: {', '.join(result.created) or 'none'}; "
        f"already matching: {', '.join(result.unchanged) or 'none'}"
    )
    return 0


def _demo_customers(args: argparse.Namespace) -> int:
    from billing_demo.customers import create_missing_customers
    from billing_pipeline import config
    from billing_pipeline.db.database import database_url
    from billing_pipeline.db.engine import make_engine

    if (config.env(config.STRIPE_SECRET_KEY) or "").startswith("sk_live_"):
        print("error: refusing to create demo customers with a live key", file=sys.stderr)
        return 1
    with database_url() as url:
        engine = make_engine(url)
        created = create_missing_customers(engine, _client())
        engine.dispose()
    print(f"demo customers created: {created}")
    return 0
