"""Stripe's thin meter-error events: received over HTTP, stored, fetched, applied to the ledger.

End to end: the reporting asset sends an event for a customer Stripe does not know, Stripe (the
emulator) accepts it with 200 and later delivers a signed thin event to the receiver; the
processing job fetches the full event and marks that ledger row rejected, which the failed-rows
check reports until the amount is billed again under a new revision.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
import requests
from sqlalchemy import Engine, text

from billing_pipeline.stripe_reporting.checks import ledger_failed_rows
from billing_pipeline.webhooks.app import create_app
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import (
    Billing,
    evaluate_checks,
    pipeline_resources,
    run_webhook_job,
)
from billing_pipeline_tests.support.webhooks import SECRET, dumps, inbox_rows, serve, sign
from stripe_emulator.server import StripeEmulator

DAY = datetime.now(UTC).date() - timedelta(days=2)
ERROR_TYPE = "v1.billing.meter.error_report_triggered"


@pytest.fixture
def thin_receiver(
    engine: Engine, database_url: str, emulator_server: StripeEmulator
) -> Iterator[str]:
    """A receiver that trusts our test secret and the emulator's signing secret."""
    app = create_app(database_url, [SECRET, emulator_server.webhook_secret])
    with serve(app) as url:
        yield url


def thin_event(event_id: str = "evt_test_thin_1", **overrides: Any) -> dict[str, Any]:
    """A thin notification as Stripe delivers it: no data, only what identifies the event."""
    return {
        "id": event_id,
        "object": "v2.core.event",
        "type": ERROR_TYPE,
        "created": "2026-01-01T00:00:00.000Z",
        "livemode": False,
        "related_object": {
            "id": "mtr_test_1",
            "type": "billing.meter",
            "url": "/v1/billing/meters/mtr_test_1",
        },
        **overrides,
    }


def post_thin(url: str, body: str, signature: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return requests.post(f"{url}/webhooks/stripe/thin", data=body, headers=headers, timeout=10)


def wait_for_inbox(engine: Engine, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(rows := inbox_rows(engine)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


def ledger(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT identifier, status, error_code, status_reason FROM billing.meter_ledger")
        ).mappings()
        return {row["identifier"]: dict(row) for row in rows}


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_async_error_report_rejects_the_row_and_the_next_run_bills_it_again(
    api: str, billing: Billing, thin_receiver: str
) -> None:
    # v1 answers 200 before validating the customer (the emulator's async mode); the v2 stream
    # validates every event asynchronously.
    engine, emulator = billing.engine, billing.emulator
    known = billing.stripe_billing.client.v1.customers.create({"name": "Known"}).id
    add_organization(engine, 1, customer=known)
    add_organization(engine, 2, customer="cus_deleted_at_stripe")
    for sensor, organization in ((1, 1), (2, 2)):
        add_sensor(engine, sensor, organization, midnight(DAY) - timedelta(days=1))
        add_readings(engine, sensor, DAY, 3)
    emulator.set_unknown_customer_mode("async")
    emulator.set_event_destination(f"{thin_receiver}/webhooks/stripe/thin")

    def report_day() -> dg.ExecuteInProcessResult:
        return billing.materialize_day(DAY, stripe=billing.stripe(meter_event_api=api))

    reported = report_day()

    # Stripe answered 200 to all four events, so the ledger says sent...
    assert reported.success
    assert {row["status"] for row in ledger(engine).values()} == {"sent"}
    # ...and then delivered one signed thin event per refused event to the receiver.
    stored = wait_for_inbox(engine, 2)
    assert [row["event_type"] for row in stored] == [ERROR_TYPE, ERROR_TYPE]
    assert all(row["payload"]["object"] == "v2.core.event" for row in stored)
    assert all("data" not in row["payload"] for row in stored)  # thin: fetched when processed

    processed = run_webhook_job(billing.instance, billing.resources())

    assert processed.success
    assert {row["status"] for row in inbox_rows(engine)} == {"processed"}
    rows = ledger(engine)
    failed = {i: r for i, r in rows.items() if r["status"] == "rejected"}
    assert sorted(failed) == sorted(r["identifier"] for r in emulator.error_reports())
    # Only the unknown customer's rows (identifiers: bp-<meter>-<customer>-<day>-r<n>-<digest>).
    assert {i.split("-")[2] for i in failed} == {"cus_deleted_at_stripe"}
    assert {r["error_code"] for r in failed.values()} == {"meter_event_customer_not_found"}
    assert all("asynchronous error" in r["status_reason"] for r in failed.values())
    assert [r["status"] for i, r in rows.items() if i.split("-")[2] == known] == ["sent", "sent"]

    def failed_rows_check() -> dg.AssetCheckEvaluation:
        [evaluation] = evaluate_checks(
            billing.instance, billing.database_url, [ledger_failed_rows]
        ).values()
        return evaluation

    evaluation = failed_rows_check()
    assert not evaluation.passed
    assert sorted(evaluation.metadata["identifiers"].value) == sorted(failed)  # type: ignore[arg-type]

    # The operator fixes the customer. The rejected identifiers are spent at Stripe and never
    # resent; the next run bills the day to the organization's customer now, under its own
    # identifiers.
    fixed = billing.stripe_billing.client.v1.customers.create({"name": "Fixed"}).id
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE subscriptions SET stripe_customer_id = :c WHERE organization_id = 2"),
            {"c": fixed},
        )
    assert report_day().success
    rebilled = {
        e["identifier"]: e["value"] for e in emulator.meter_events() if e["customer"] == fixed
    }
    assert {i.rsplit("-", 1)[0]: v for i, v in rebilled.items()} == {
        f"bp-active_sensors-{fixed}-{DAY:%Y%m%d}-r1": 1,
        f"bp-temperature_readings-{fixed}-{DAY:%Y%m%d}-r1": 3,
    }
    assert failed_rows_check().passed


def test_without_a_secret_key_the_thin_event_waits_in_the_inbox(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    thin_receiver: str,
) -> None:
    body = dumps(thin_event())
    assert post_thin(thin_receiver, body, sign(body)).status_code == 200
    assert run_webhook_job(dagster_instance, pipeline_resources(database_url)).success

    # Nothing is lost: the event stays in the inbox as failed, to be retried once a key is set.
    [row] = inbox_rows(engine)
    assert row["status"] == "failed"
    assert row["attempts"] == 1
    assert "STRIPE_SECRET_KEY is not set" in row["last_error"]


def test_thin_endpoint_stores_once_and_refuses_what_is_not_a_signed_thin_event(
    engine: Engine, thin_receiver: str
) -> None:
    body = dumps(thin_event())
    assert post_thin(thin_receiver, body, sign(body)).status_code == 200
    assert post_thin(thin_receiver, body, sign(body)).json()["message"] == "duplicate"
    [row] = inbox_rows(engine)
    assert row["event_id"] == "evt_test_thin_1"
    assert row["stripe_created"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert json.loads(body) == row["payload"]

    other = dumps(thin_event("evt_test_thin_2"))
    snapshot = dumps({**thin_event("evt_test_snapshot"), "object": "event", "created": 1})
    no_created = dumps({k: v for k, v in thin_event("evt_test_thin_3").items() if k != "created"})
    refusals = {
        "unsigned": post_thin(thin_receiver, other, None),
        "wrong secret": post_thin(thin_receiver, other, sign(other, "whsec_wrong")),
        "stale signature": post_thin(
            thin_receiver, other, sign(other, timestamp=int(time.time()) - 3600)
        ),
        "tampered body": post_thin(thin_receiver, other.replace("thin_2", "thin_9"), sign(other)),
        "snapshot event": post_thin(thin_receiver, snapshot, sign(snapshot)),
        "no created": post_thin(thin_receiver, no_created, sign(no_created)),
        "not json": post_thin(thin_receiver, "[1, 2", sign("[1, 2")),
    }

    assert {name: r.status_code for name, r in refusals.items()} == dict.fromkeys(refusals, 400)
    assert refusals["snapshot event"].json()["message"] == "malformed event"
    assert refusals["wrong secret"].json()["message"] == "invalid signature"
    assert len(inbox_rows(engine)) == 1  # only the first, valid event was stored
