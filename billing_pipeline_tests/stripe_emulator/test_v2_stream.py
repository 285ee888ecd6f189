"""v2 meter event sessions and streams, async error reports, and thin events."""

from __future__ import annotations

import json
from typing import Any

import pytest
import stripe

from billing_pipeline_tests.support.stripe import (
    DAY,
    MIDNIGHT,
    NOON,
    WebhookRecorder,
    make_client,
)
from stripe_emulator import EmulatorControl, StripeEmulator
from stripe_emulator.clock import iso8601

# Every test here starts from an empty emulator whose clock reads NOON.
pytestmark = pytest.mark.usefixtures("emulator_at_noon")


def stream_client(
    emulator_server: StripeEmulator, stripe_client: stripe.StripeClient
) -> stripe.StripeClient:
    session = stripe_client.v2.billing.meter_event_session.create()
    return make_client(emulator_server.url, key=session.authentication_token)


def event(customer: str, value: str, ts: int, identifier: str) -> Any:
    return {
        "event_name": "readings",
        "payload": {"stripe_customer_id": customer, "value": value},
        "timestamp": iso8601(ts),
        "identifier": identifier,
    }


def test_session_has_a_15_minute_token(stripe_client: stripe.StripeClient) -> None:
    session = stripe_client.v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session"
    assert session.authentication_token
    assert session.created == iso8601(NOON)
    assert session.expires_at == iso8601(NOON + 900)


def test_stream_events_are_counted_in_summaries(
    emulator_server: StripeEmulator,
    stripe_client: stripe.StripeClient,
    readings_meter: Any,
    customer: str,
    emulator_at_noon: EmulatorControl,
) -> None:
    streamer = stream_client(emulator_server, stripe_client)
    events: Any = [event(customer, "2", NOON - i, f"v2-{i}") for i in range(100)]
    streamer.v2.billing.meter_event_stream.create({"events": events})
    summary = stripe_client.v1.billing.meters.event_summaries.list(
        readings_meter.id,
        {"customer": customer, "start_time": MIDNIGHT, "end_time": MIDNIGHT + DAY},
    )
    assert summary.data[0].aggregated_value == 200.0
    recorded = emulator_at_noon.meter_events()
    assert len(recorded) == 100
    assert {r["source"] for r in recorded} == {"v2"}


@pytest.mark.usefixtures("readings_meter")
def test_more_than_100_events_is_a_400(
    emulator_server: StripeEmulator, stripe_client: stripe.StripeClient, customer: str
) -> None:
    streamer = stream_client(emulator_server, stripe_client)
    events: Any = [event(customer, "1", NOON, f"big-{i}") for i in range(101)]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        streamer.v2.billing.meter_event_stream.create({"events": events})
    assert raised.value.http_status == 400


@pytest.mark.usefixtures("readings_meter")
def test_expired_session_is_rejected(
    emulator_server: StripeEmulator,
    stripe_client: stripe.StripeClient,
    customer: str,
    emulator_at_noon: EmulatorControl,
) -> None:
    streamer = stream_client(emulator_server, stripe_client)
    emulator_at_noon.advance_clock(15 * 60 - 1)
    streamer.v2.billing.meter_event_stream.create({"events": [event(customer, "1", NOON, "a")]})
    emulator_at_noon.advance_clock(1)
    with pytest.raises(stripe.TemporarySessionExpiredError) as raised:
        streamer.v2.billing.meter_event_stream.create({"events": [event(customer, "1", NOON, "b")]})
    assert raised.value.http_status == 401
    assert raised.value.code == "billing_meter_event_session_expired"


def test_unknown_token_is_an_authentication_error(emulator_server: StripeEmulator) -> None:
    streamer = make_client(emulator_server.url, key="not_a_session_token")
    with pytest.raises(stripe.AuthenticationError):
        streamer.v2.billing.meter_event_stream.create({"events": []})


def test_stream_validation_is_asynchronous(
    emulator_server: StripeEmulator,
    stripe_client: stripe.StripeClient,
    readings_meter: Any,
    customer: str,
    emulator_at_noon: EmulatorControl,
) -> None:
    streamer = stream_client(emulator_server, stripe_client)
    bad: Any = [
        event("cus_ghost", "1", NOON, "e-customer"),
        event(customer, "1.5", NOON, "e-value"),
        event(customer, "1", NOON - 36 * DAY, "e-old"),
        event(customer, "1", NOON + 600, "e-future"),
        {"event_name": "nope", "payload": {"stripe_customer_id": customer}, "identifier": "e-nm"},
        event(customer, "5", NOON, "ok"),
        event(customer, "5", NOON, "ok"),  # duplicate: dropped, billed once
    ]
    streamer.v2.billing.meter_event_stream.create({"events": bad})
    codes = {r["identifier"]: r["code"] for r in emulator_at_noon.error_reports()}
    assert codes == {
        "e-customer": "meter_event_customer_not_found",
        "e-value": "meter_event_invalid_value",
        "e-old": "timestamp_too_far_in_past",
        "e-future": "timestamp_in_future",
        "e-nm": "no_meter",
    }
    assert [e["identifier"] for e in emulator_at_noon.meter_events()] == ["ok"]
    summary = stripe_client.v1.billing.meters.event_summaries.list(
        readings_meter.id,
        {"customer": customer, "start_time": MIDNIGHT, "end_time": MIDNIGHT + DAY},
    )
    assert summary.data[0].aggregated_value == 5.0


def test_error_report_is_delivered_as_a_signed_thin_event(
    emulator_server: StripeEmulator,
    stripe_client: stripe.StripeClient,
    readings_meter: Any,
    emulator_at_noon: EmulatorControl,
    webhook_recorder: WebhookRecorder,
) -> None:
    emulator_at_noon.set_event_destination(webhook_recorder.url)
    stripe_client.v1.billing.meter_events.create(
        {
            "event_name": "readings",
            "payload": {"stripe_customer_id": "cus_ghost", "value": "1"},
            "identifier": "thin-1",
        }
    )
    (delivery,) = webhook_recorder.wait()
    raw = json.loads(delivery.body)
    assert raw["object"] == "v2.core.event"
    assert raw["type"] == "v1.billing.meter.error_report_triggered"
    assert raw["related_object"]["id"] == readings_meter.id
    notification = stripe_client.parse_event_notification(
        delivery.body, delivery.headers["Stripe-Signature"], emulator_server.webhook_secret
    )
    assert notification.type == "v1.billing.meter.error_report_triggered"
    full = notification.fetch_event()
    error_type = full.data.reason.error_types[0]
    assert error_type.code == "meter_event_customer_not_found"
    assert error_type.sample_errors[0].request.identifier == "thin-1"
    assert notification.fetch_related_object().id == readings_meter.id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe_client.parse_event_notification(
            delivery.body, delivery.headers["Stripe-Signature"], "whsec_wrong"
        )
