"""The demo tooling's commands: `seed`, `stripe-emulator` and `dev`.

The product's command line (billing_pipeline/cli.py) registers these through this one module, so
the product never imports the emulator itself; each command keeps its heavy imports in its
handler, so `billing-pipeline --help` stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any

DEMO_COMMAND_MODULES: tuple[str, ...] = (
    "billing_demo.seed.cli",
    "stripe_emulator.cli",
    "billing_demo.dev.cli",
)


def register(subparsers: Any) -> None:
    for module_name in DEMO_COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
