"""docs/operations.md, "What may face the internet", names the ports the code really opens."""

from __future__ import annotations

import argparse
from pathlib import Path

from billing_demo.dev.supervisor import WEBHOOK_PATH, Options
from billing_pipeline.webhooks import cli as webhooks_cli
from stripe_emulator.cli import DEFAULT_PORT as EMULATOR_PORT

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


def _section(title: str) -> str:
    start = OPERATIONS.index(f"\n## {title}\n")
    end = OPERATIONS.find("\n## ", start + 1)
    return OPERATIONS[start : end if end != -1 else len(OPERATIONS)]


def _serve_defaults() -> tuple[str, int]:
    """`billing-pipeline webhooks serve`'s default host and port, from its own parser."""
    parser = argparse.ArgumentParser()
    webhooks_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["webhooks", "serve"])
    return args.host, args.port


def test_every_listener_is_named_with_the_port_the_code_uses() -> None:
    section = _section("What may face the internet")
    demo = Options()
    host, port = _serve_defaults()
    assert f"webhooks serve --host {host} --port {port}" in section
    assert f"{demo.webhook_port} in the demo" in section
    assert f"the demo binds `{demo.host}:{demo.dagster_port}`" in section
    assert f"{EMULATOR_PORT} (`dev --emulator-port`" in section
    assert demo.emulator_port == EMULATOR_PORT
    assert f"`{WEBHOOK_PATH}`" in section and f"`{WEBHOOK_PATH}/thin`" in section
    for listener in ("Webhook receiver", "Dagster webserver", "Code server", "PostgreSQL"):
        assert f"\n| {listener}" in section
    # Only the receiver is public.
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split("|")[1].strip() for row in rows if "**Public**" in row] == [
        "Webhook receiver (`gunicorn … billing_pipeline.webhooks.wsgi:app`; "
        "`billing-pipeline webhooks serve` in development)"
    ]
