"""The demo's webhook side across restarts: one secret, and a test event that changes the demo
subscription it names and nothing else (the subscriptions themselves:
test_demo_subscriptions.py)."""

from __future__ import annotations

import shlex
import stat
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine, text

from billing_demo.dev.webhook_demo import persistent_webhook_secret, trigger_command
from billing_demo.subscriptions import DemoSubscription
from billing_pipeline.webhooks.app import create_app
from billing_pipeline.webhooks.processing import process_open_events
from billing_pipeline_tests.support.builders import add_organization
from billing_pipeline_tests.support.webhooks import serve, subscription_row


def test_the_webhook_secret_is_created_once_and_private(tmp_path: Path) -> None:
    first = persistent_webhook_secret(tmp_path)

    assert first.startswith("whsec_")
    assert persistent_webhook_secret(tmp_path) == first
    mode = stat.S_IMODE((tmp_path / "stripe_webhook_secret").stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["stripe_webhook_secret"]


def test_the_printed_test_webhook_changes_the_subscription_it_names(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    add_organization(engine, 1, customer="cus_demo_1")
    add_organization(engine, 2, customer="cus_demo_2")
    before = subscription_row(engine, "sub_cus_demo_1")
    secret = persistent_webhook_secret(tmp_path)
    target = DemoSubscription(1, "cus_demo_1", "sub_cus_demo_1")

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
