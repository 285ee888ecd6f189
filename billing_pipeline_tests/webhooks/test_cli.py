"""The `webhooks` commands and the gunicorn entry point, as operators run them."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.webhooks import cli
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.invoicing import price_for_event
from billing_pipeline_tests.support.network import free_port
from billing_pipeline_tests.support.stripe import TEST_KEY
from billing_pipeline_tests.support.webhooks import (
    SECRET,
    T0,
    checkout_completed,
    dumps,
    inbox_rows,
    sign,
    store_events,
)

BIN = Path(sys.executable).parent


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="billing-pipeline")
    cli.register(root.add_subparsers(dest="command", required=True))
    return root


def test_serve_refuses_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    args = parser().parse_args(["webhooks", "serve", "--port", "0", "--host", "127.0.0.1"])

    assert args.handler(args) == 2
    assert "STRIPE_WEBHOOK_SECRET" in capsys.readouterr().err


def test_requeue_gives_a_dead_letter_fresh_attempts(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = checkout_completed(1, "cus_1", "sub_1", T0)
    store_events(engine, [event])
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE billing.webhook_inbox"
            " SET status = 'dead_letter', attempts = 5, last_error = 'x'"
        )
    monkeypatch.setenv("DATABASE_URL", database_url)
    args = parser().parse_args(["webhooks", "requeue", event["id"]])

    assert args.handler(args) == 0
    [row] = inbox_rows(engine)
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 0, None)
    # A second requeue finds nothing to requeue and says so.
    assert args.handler(args) == 1


def test_gunicorn_serves_the_wsgi_app_from_the_environment(
    engine: Engine, database_url: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": f"whsec_old,{SECRET}",
        "STRIPE_WEBHOOK_MAX_BODY_BYTES": "4096",
    }
    server = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "--workers",
            "1",
            "--bind",
            f"127.0.0.1:{port}",
            "billing_pipeline.webhooks.wsgi:app",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):
                assert server.poll() is None and time.monotonic() < deadline, (
                    "gunicorn did not start"
                )
                time.sleep(0.1)
        body = dumps(checkout_completed(1, "cus_1", "sub_1", T0))
        response = requests.post(
            f"http://127.0.0.1:{port}/webhooks/stripe",
            data=body,
            headers={"Stripe-Signature": sign(body)},
            timeout=10,
        )
        assert response.status_code == 200
        assert len(inbox_rows(engine)) == 1
        # The body limit comes from the environment under gunicorn too.
        large = dumps(checkout_completed(1, "cus_1", "sub_2", T0, padding="x" * 5000))
        refused = requests.post(
            f"http://127.0.0.1:{port}/webhooks/stripe",
            data=large,
            headers={"Stripe-Signature": sign(large)},
            timeout=10,
        )
        assert refused.status_code == 413
        assert len(inbox_rows(engine)) == 1
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
    # Neither secret reaches gunicorn's logs.
    assert SECRET.encode() not in stderr and b"whsec_old" not in stderr


def test_wsgi_refuses_to_boot_without_a_secret(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STRIPE_WEBHOOK_SECRET"}
    env["DATABASE_URL"] = database_url

    result = subprocess.run(
        [sys.executable, "-c", "import billing_pipeline.webhooks.wsgi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET must be set" in result.stderr


def test_wsgi_refuses_to_boot_with_a_bad_body_limit(database_url: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_WEBHOOK_MAX_BODY_BYTES": "1MB",
    }

    result = subprocess.run(
        [sys.executable, "-c", "import billing_pipeline.webhooks.wsgi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "STRIPE_WEBHOOK_MAX_BODY_BYTES must be a positive whole number" in result.stderr


def test_recover_stores_the_events_the_inbox_lacks_and_says_so(
    billing: Billing,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stripe produced a subscription's events while no endpoint was configured."""
    stripe = billing.stripe_billing.client
    customer = stripe.v1.customers.create({"name": "Acme"}).id
    subscription = stripe.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": price_for_event(stripe, "active_sensors")}]}
    )
    stripe.v1.subscriptions.cancel(subscription.id)
    monkeypatch.setenv("DATABASE_URL", billing.database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", billing.api_base)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    args = parser().parse_args(["webhooks", "recover", "--since", yesterday.isoformat()])

    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert f"listed 2 Stripe events since {yesterday} 00:00:00+00:00" in out
    assert "beyond Stripe's 30-day retention" not in out
    rows = inbox_rows(billing.engine)
    assert [r["event_type"] for r in rows] == [
        "customer.subscription.created",
        "customer.subscription.deleted",
    ]
    assert {r["status"] for r in rows} == {InboxStatus.PENDING}
    assert f"recovered into the inbox: 2 {rows[0]['event_id']} {rows[1]['event_id']}" in out
    # Again, from the confirmed point: nothing is missing any more.
    args = parser().parse_args(["webhooks", "recover"])
    assert args.handler(args) == 0
    assert "recovered into the inbox: 0" in capsys.readouterr().out
    assert len(inbox_rows(billing.engine)) == 2


def test_recover_refuses_without_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    args = parser().parse_args(["webhooks", "recover"])

    assert args.handler(args) == 2
    assert "STRIPE_SECRET_KEY is not set" in capsys.readouterr().err
