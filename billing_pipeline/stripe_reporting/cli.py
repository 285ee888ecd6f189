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
    demo = commands.add_parser(
        "demo-subscriptions",
        help="Test mode only: subscribe every seeded paying organization that Stripe does not "
        "know yet (a customer, metered prices, a backdated subscription); the webhook flow "
        "then fills `subscriptions` from Stripe's events.",
    )
    demo.set_defaults(handler=_demo_subscriptions)
    invoices = commands.add_parser(
        "invoices",
        help="Print Stripe's invoices, newest first: number, customer, period, status, and each "
        "line's quantity and amount.",
    )
    invoices.add_argument("--customer", metavar="CUS_ID", help="only this customer's invoices")
    invoices.add_argument(
        "--limit", type=int, default=20, metavar="N", help="at most N invoices (default: 20)"
    )
    invoices.set_defaults(handler=_invoices)
    so_far = commands.add_parser(
        "bill-so-far",
        help="Each subscription's current period so far, per meter: the quantity in the source, "
        "in the ledger and in Stripe's invoice preview, with the expected amount.",
    )
    so_far.add_argument("--customer", metavar="CUS_ID", help="only this customer's subscriptions")
    so_far.add_argument(
        "--max-previews",
        type=int,
        default=None,
        metavar="N",
        help="at most N Stripe preview calls, one per subscription (default: 50; 0: none)",
    )
    so_far.set_defaults(handler=_bill_so_far)
    from billing_pipeline.stripe_reporting import status_cli

    status_cli.register(subparsers, commands)


def _client() -> Any:
    """The Stripe resource the code location binds: the environment's, else the running demo's."""
    from billing_pipeline.resources import stripe_for_commands

    client = stripe_for_commands().client()
    if client is None:
        raise SystemExit(
            "STRIPE_SECRET_KEY is not set and no `billing-pipeline dev` runs for this data "
            "directory (for the emulator any sk_test_… key works)"
        )
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


def _demo_subscriptions(args: argparse.Namespace) -> int:
    from billing_demo.subscriptions import create_demo_subscriptions
    from billing_pipeline import config
    from billing_pipeline.db.database import database_url
    from billing_pipeline.db.engine import make_engine
    from billing_pipeline.stripe_reporting.meter_sync import MeterMismatchError
    from billing_pipeline.usage.meters import METERS

    if not (config.setting(config.STRIPE_SECRET_KEY) or "").startswith("sk_test_"):
        print("error: demo subscriptions need a test-mode key (sk_test_…)", file=sys.stderr)
        return 1
    with database_url() as url:
        engine = make_engine(url)
        try:
            result = create_demo_subscriptions(engine, _client(), list(METERS))
        except MeterMismatchError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            engine.dispose()
    print(
        f"demo subscriptions created: {len(result.created)}; already in Stripe: {len(result.kept)}"
    )
    return 0


def _invoices(args: argparse.Namespace) -> int:
    from billing_pipeline.stripe_reporting.invoice_list import format_invoices

    print(format_invoices(_client(), args.customer, args.limit))
    return 0


def _bill_so_far(args: argparse.Namespace) -> int:
    from billing_pipeline.stripe_reporting.bill_so_far import (
        DEFAULT_MAX_PREVIEWS,
        bill_so_far,
        render_text,
    )
    from billing_pipeline.stripe_reporting.status_cli import _engine
    from billing_pipeline.usage.meters import METERS

    cap = DEFAULT_MAX_PREVIEWS if args.max_previews is None else args.max_previews
    stripe = _client() if cap > 0 else None
    with _engine() as engine:
        result = bill_so_far(engine, METERS, stripe, customer=args.customer, max_previews=cap)
    print(render_text(result))
    return 0
