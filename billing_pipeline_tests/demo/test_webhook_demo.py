"""The demo's webhook side across restarts: one secret, the same customers, a test event that
changes the seeded subscription it names and nothing else."""

from __future__ import annotations

import shlex
import stat
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine, text

from billing_demo.customers import create_missing_customers
from billing_demo.dev.webhook_demo import (
    demo_subscription,
    persistent_webhook_secret,
    trigger_command,
)
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.webhooks.app import create_app
from billing_pipeline.webhooks.processing import process_open_events
from billing_pipeline_tests.support.builders import add_organization
from billing_pipeline_tests.support.webhooks import serve, subscription_row
from stripe_emulator.server import StripeEmulator

KEY = "sk_test_emulator"


def test_the_webhook_secret_is_created_once_and_private(tmp_path: Path) -> None:
    first = persistent_webhook_secret(tmp_path)

    assert first.startswith("whsec_")
    assert persistent_webhook_secret(tmp_path) == first
    mode = stat.S_IMODE((tmp_path / "stripe_webhook_secret").stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["stripe_webhook_secret"]


def customers(engine: Engine) -> dict[int, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT organization_id, stripe_customer_id FROM subscriptions")
        ).all()
    return {organization: customer for organization, customer in rows}


def test_a_restarted_emulator_keeps_the_demo_customers(engine: Engine, tmp_path: Path) -> None:
    """A second `make demo` finds the customers it created and rewrites no subscription."""
    add_organization(engine, 1, customer="cus_seeded_1")
    add_organization(engine, 2, customer="cus_seeded_2")
    state_file = tmp_path / "stripe_emulator.json"

    with StripeEmulator(state_file=state_file) as emulator:
        assert create_missing_customers(engine, StripeBilling(KEY, emulator.url)) == 2
    created = customers(engine)
    assert not any(customer.startswith("cus_seeded") for customer in created.values())

    with StripeEmulator(state_file=state_file) as emulator:
        assert create_missing_customers(engine, StripeBilling(KEY, emulator.url)) == 0
    assert customers(engine) == created


def test_the_printed_test_webhook_changes_the_seeded_subscription(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    add_organization(engine, 1, customer="cus_demo_1")
    add_organization(engine, 2, customer="cus_demo_2")
    before = subscription_row(engine, "sub_cus_demo_1")
    secret = persistent_webhook_secret(tmp_path)
    target = demo_subscription(database_url)
    assert target is not None
    assert (target.organization_id, target.customer) == (1, "cus_demo_1")

    with serve(create_app(database_url, [secret])) as base:
        command = trigger_command(target, f"{base}/webhooks/stripe", secret)
        argv = shlex.split(command.replace("\\\n", " "))
        assert argv[0] == ".venv/bin/billing-pipeline"
        argv[0:1] = [sys.executable, "-m", "billing_pipeline.cli"]
        sent = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert len(process_open_events(engine).processed) == 1

    after = subscription_row(engine, "sub_cus_demo_1")
    assert after["payment_status"] == "payment_failed"
    # What bills the organization stays as it was: the customer, the start, the status.
    for column in ("stripe_customer_id", "started_at", "status", "ended_at"):
        assert after[column] == before[column], column
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM subscriptions")).scalar() == 2
