"""The `billing-pipeline` command.

Each feature owns its subcommands in a small `cli` module with a `register(subparsers)` function;
this file only assembles them, so adding a command never touches another feature's code.
Heavy imports stay inside the command handlers so `billing-pipeline --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "billing_pipeline.db.cli",
    "billing_pipeline.stripe_reporting.cli",
    "billing_pipeline.webhooks.cli",
    # The demo tooling (seed, the Stripe emulator, the dev supervisor) registers its own.
    "billing_demo.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="billing-pipeline",
        description="Bill IoT sensor usage through Stripe Billing Meters with Dagster.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int | None = args.handler(args)
    return result or 0


if __name__ == "__main__":
    sys.exit(main())
