"""Signed v1 webhook events (`trigger`), the CLI, and the state file across restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import stripe

from billing_pipeline_tests.support.stripe import WebhookRecorder, make_client, run_emulator_cli
from stripe_emulator import StripeEmulator
from stripe_emulator.webhook_events import EVENT_TYPES, TriggerOptions, build_event
from stripe_emulator.webhooks import signature_header

SECRET = "whsec_test_secret_for_receiver"


def test_signature_matches_stripes_own_scheme() -> None:
    raw = b'{"id": "evt_1"}'
    header = signature_header(raw, SECRET, 1_700_000_000)
    expected = stripe.WebhookSignature._compute_signature(f"1700000000.{raw.decode()}", SECRET)
    assert header == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_trigger_sends_a_verifiable_event(
    webhook_recorder: WebhookRecorder, event_type: str
) -> None:
    argv = [
        "stripe-emulator",
        "trigger",
        event_type,
        "--url",
        webhook_recorder.url,
        "--secret",
        SECRET,
    ]
    argv += ["--customer", "cus_T1", "--subscription", "sub_T1", "--organization-id", "7"]
    assert run_emulator_cli(argv) == 0
    (delivery,) = webhook_recorder.wait()
    event = stripe.Webhook.construct_event(
        delivery.body.decode(), delivery.headers["Stripe-Signature"], SECRET
    )
    assert event.type == event_type
    assert event.api_version == "2025-03-31.basil"
    obj = event.data.object
    assert obj["customer"] == "cus_T1"
    if event_type == "checkout.session.completed":
        assert obj["client_reference_id"] == "7"
        assert obj["metadata"]["organization_id"] == "7"
        assert obj["subscription"] == "sub_T1"
    elif event_type.startswith("customer.subscription."):
        assert obj["id"] == "sub_T1"
        item = obj["items"]["data"][0]
        assert item["current_period_end"] > item["current_period_start"]
        assert "current_period_end" not in obj
        expected = "canceled" if event_type.endswith("deleted") else "active"
        assert obj["status"] == expected
    else:
        assert obj["parent"]["subscription_details"]["subscription"] == "sub_T1"
        assert "subscription" not in obj
        assert obj["status"] == ("paid" if event_type == "invoice.paid" else "open")


def test_trigger_status_option_and_tampering(webhook_recorder: WebhookRecorder) -> None:
    run_emulator_cli(
        [
            *("stripe-emulator", "trigger", "customer.subscription.updated"),
            *("--url", webhook_recorder.url, "--secret", SECRET, "--status", "past_due"),
        ]
    )
    (delivery,) = webhook_recorder.wait()
    assert json.loads(delivery.body)["data"]["object"]["status"] == "past_due"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            delivery.body.decode().replace("past_due", "active"),
            delivery.headers["Stripe-Signature"],
            SECRET,
        )


def test_build_event_rejects_unknown_types() -> None:
    with pytest.raises(ValueError):
        build_event("charge.succeeded", TriggerOptions())


def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "stripe.json"
    event: Any
    with StripeEmulator(state_file=state_file) as first:
        client = make_client(first.url)
        customer = client.v1.customers.create({"email": "keep@example.com"}).id
        client.v1.billing.meters.create(
            {"display_name": "R", "event_name": "r", "default_aggregation": {"formula": "sum"}}
        )
        event = {
            "event_name": "r",
            "payload": {"stripe_customer_id": customer, "value": "2"},
            "identifier": "persisted",
        }
        client.v1.billing.meter_events.create(event)
    assert state_file.exists()
    with StripeEmulator(state_file=state_file) as second:
        client = make_client(second.url)
        assert client.v1.customers.retrieve(customer).email == "keep@example.com"
        assert [e["identifier"] for e in second.control.meter_events()] == ["persisted"]
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.billing.meter_events.create(event)


def test_serve_prints_url_and_secret_and_stops_on_sigterm() -> None:
    code = (
        "import sys; from billing_pipeline_tests.support.stripe "
        "import run_emulator_cli; sys.exit(run_emulator_cli(sys.argv[1:]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, "stripe-emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        url = lines[1].strip().removeprefix("STRIPE_API_BASE=")
        assert lines[2].startswith("STRIPE_WEBHOOK_SECRET=whsec_")
        assert make_client(url).v1.customers.list().data == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
