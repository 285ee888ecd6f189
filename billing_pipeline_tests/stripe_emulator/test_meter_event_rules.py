"""Every Billing Meter rule on v1 meter events and adjustments, through the official SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe

from billing_pipeline_tests.support.stripe import DAY, MIDNIGHT, NOON
from stripe_emulator import EmulatorControl

# Every test here starts from an empty emulator whose clock reads NOON.
pytestmark = pytest.mark.usefixtures("emulator_at_noon")


def send(stripe_client: stripe.StripeClient, customer: str, value: str = "1", **extra: Any) -> Any:
    params: Any = {
        "event_name": "readings",
        "payload": {"stripe_customer_id": customer, "value": value},
        **extra,
    }
    return stripe_client.v1.billing.meter_events.create(params)


def day_total(
    stripe_client: stripe.StripeClient, meter_id: str, customer: str, start: int
) -> float:
    summaries = stripe_client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer, "start_time": start, "end_time": start + DAY}
    )
    return float(summaries.data[0].aggregated_value)


def test_accepted_event_is_echoed_and_recorded(
    stripe_client: stripe.StripeClient,
    readings_meter: Any,
    customer: str,
    emulator_at_noon: EmulatorControl,
) -> None:
    event = send(
        stripe_client, customer, "42", identifier="org1-2025-06-15-r1", timestamp=NOON - 60
    )
    assert event.object == "billing.meter_event"
    assert event.identifier == "org1-2025-06-15-r1"
    assert event.payload["value"] == "42"
    assert event.timestamp == NOON - 60
    (recorded,) = emulator_at_noon.meter_events()
    assert recorded["value"] == 42
    assert recorded["customer"] == customer
    assert recorded["received_at"] == NOON
    assert recorded["event_name"] == "readings"


@pytest.mark.usefixtures("readings_meter")
def test_control_plane_lists_events_after_a_sequence_number(
    stripe_client: stripe.StripeClient, customer: str, emulator_at_noon: EmulatorControl
) -> None:
    for name in ("first", "second", "third"):
        send(stripe_client, customer, identifier=name)
    (first, *later) = emulator_at_noon.meter_events()
    assert [e["identifier"] for e in later] == ["second", "third"]
    assert emulator_at_noon.meter_events(after=first["seq"]) == later
    assert emulator_at_noon.meter_events(after=later[-1]["seq"]) == []


@pytest.mark.usefixtures("readings_meter")
def test_unknown_and_inactive_event_names_are_rejected(
    stripe_client: stripe.StripeClient, customer: str, make_meter: Callable[..., Any]
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(stripe_client, customer, event_name="no_such_meter")
    assert raised.value.http_status == 400
    assert raised.value.param == "event_name"
    old = make_meter("old_meter", "count")
    stripe_client.v1.billing.meters.deactivate(old.id)
    with pytest.raises(stripe.InvalidRequestError):
        send(stripe_client, customer, event_name="old_meter")


@pytest.mark.usefixtures("readings_meter")
def test_identifier_longer_than_100_characters_is_rejected(
    stripe_client: stripe.StripeClient, customer: str
) -> None:
    send(stripe_client, customer, identifier="x" * 100)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(stripe_client, customer, identifier="y" * 101)
    assert raised.value.param == "identifier"


def test_duplicate_identifier_is_a_400_until_24_hours_pass(
    stripe_client: stripe.StripeClient,
    readings_meter: Any,
    customer: str,
    emulator_at_noon: EmulatorControl,
) -> None:
    send(stripe_client, customer, "5", identifier="dup-1", timestamp=NOON)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(stripe_client, customer, "5", identifier="dup-1", timestamp=NOON)
    error = raised.value
    assert error.http_status == 400
    assert str(error.user_message).startswith("An event already exists with identifier dup-1")
    assert error.code is None
    assert error.error is not None
    assert error.error.type == "invalid_request_error"
    assert error.headers is not None
    assert error.headers["Stripe-Should-Retry"] == "false"
    emulator_at_noon.advance_clock(DAY - 1)
    with pytest.raises(stripe.InvalidRequestError):
        send(stripe_client, customer, "5", identifier="dup-1", timestamp=NOON)
    emulator_at_noon.advance_clock(1)
    send(stripe_client, customer, "5", identifier="dup-1", timestamp=NOON)
    assert day_total(stripe_client, readings_meter.id, customer, MIDNIGHT) == 10.0
    assert len(emulator_at_noon.meter_events()) == 2


@pytest.mark.usefixtures("readings_meter")
def test_timestamp_window_is_35_days_back_and_5_minutes_ahead(
    stripe_client: stripe.StripeClient, customer: str
) -> None:
    send(stripe_client, customer, timestamp=NOON - 35 * DAY)
    with pytest.raises(stripe.InvalidRequestError) as too_old:
        send(stripe_client, customer, timestamp=NOON - 35 * DAY - 1)
    assert str(too_old.value.user_message).startswith(
        "The event timestamp cannot be more than 35 days in past"
    )
    send(stripe_client, customer, timestamp=NOON + 300)
    with pytest.raises(stripe.InvalidRequestError) as too_new:
        send(stripe_client, customer, timestamp=NOON + 301)
    assert too_new.value.param == "timestamp"


@pytest.mark.usefixtures("readings_meter")
def test_35_day_window_follows_the_emulator_clock(
    stripe_client: stripe.StripeClient, customer: str, emulator_at_noon: EmulatorControl
) -> None:
    send(stripe_client, customer, timestamp=NOON - DAY, identifier="fresh")
    emulator_at_noon.advance_clock(35 * DAY)
    with pytest.raises(stripe.InvalidRequestError):
        send(stripe_client, customer, timestamp=NOON - DAY, identifier="stale")


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("7", True),
        ("-3", True),
        ("999999999999999", True),
        ("1000000000000000", False),
        ("1.5", False),
        ("1e3", False),
        ("seven", False),
    ],
)
def test_values_must_be_whole_numbers_of_at_most_15_digits(
    stripe_client: stripe.StripeClient,
    readings_meter: Any,
    customer: str,
    value: str,
    accepted: bool,
) -> None:
    if accepted:
        send(stripe_client, customer, value, timestamp=NOON)
        assert day_total(stripe_client, readings_meter.id, customer, MIDNIGHT) == float(int(value))
    else:
        with pytest.raises(stripe.InvalidRequestError) as raised:
            send(stripe_client, customer, value, timestamp=NOON)
        assert raised.value.param == "payload[value]"


def test_payload_key_overrides_are_honoured(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any], customer: str
) -> None:
    meter = make_meter(
        "custom_keys",
        "sum",
        customer_mapping={"event_payload_key": "org", "type": "by_id"},
        value_settings={"event_payload_key": "n"},
    )
    stripe_client.v1.billing.meter_events.create(
        {"event_name": "custom_keys", "payload": {"org": customer, "n": "9"}, "timestamp": NOON}
    )
    assert day_total(stripe_client, meter.id, customer, MIDNIGHT) == 9.0
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.billing.meter_events.create(
            {"event_name": "custom_keys", "payload": {"stripe_customer_id": customer, "n": "1"}}
        )
    assert raised.value.param == "payload[org]"


def test_unknown_customer_is_accepted_then_reported_asynchronously(
    stripe_client: stripe.StripeClient, readings_meter: Any, emulator_at_noon: EmulatorControl
) -> None:
    event = send(stripe_client, "cus_ghost", "3", identifier="ghost-1")
    assert event.identifier == "ghost-1"
    assert emulator_at_noon.meter_events() == []
    (report,) = emulator_at_noon.error_reports()
    assert report["code"] == "meter_event_customer_not_found"
    assert report["identifier"] == "ghost-1"
    assert report["meter"] == readings_meter.id
    assert report["customer"] == "cus_ghost"
    assert report["event_id"].startswith("evt_")


@pytest.mark.usefixtures("readings_meter")
def test_reject_mode_makes_unknown_customers_a_synchronous_400(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl
) -> None:
    emulator_at_noon.set_unknown_customer_mode("reject")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(stripe_client, "cus_ghost", "3")
    assert raised.value.http_status == 400
    assert "cus_ghost" in str(raised.value.user_message)
    assert emulator_at_noon.error_reports() == []


def test_cancel_within_24_hours_removes_the_event_from_summaries(
    stripe_client: stripe.StripeClient,
    readings_meter: Any,
    customer: str,
    emulator_at_noon: EmulatorControl,
) -> None:
    send(stripe_client, customer, "4", identifier="keep", timestamp=NOON)
    send(stripe_client, customer, "6", identifier="undo", timestamp=NOON)
    adjustment = stripe_client.v1.billing.meter_event_adjustments.create(
        {"type": "cancel", "event_name": "readings", "cancel": {"identifier": "undo"}}
    )
    assert adjustment.object == "billing.meter_event_adjustment"
    assert adjustment.cancel is not None
    assert adjustment.cancel.identifier == "undo"
    assert day_total(stripe_client, readings_meter.id, customer, MIDNIGHT) == 4.0
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.billing.meter_event_adjustments.create(
            {"type": "cancel", "event_name": "readings", "cancel": {"identifier": "undo"}}
        )
    emulator_at_noon.advance_clock(DAY)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.billing.meter_event_adjustments.create(
            {"type": "cancel", "event_name": "readings", "cancel": {"identifier": "keep"}}
        )
    assert "24 hours" in str(raised.value.user_message)
    assert day_total(stripe_client, readings_meter.id, customer, MIDNIGHT) == 4.0


@pytest.mark.usefixtures("readings_meter")
def test_cancel_of_unknown_identifier_is_rejected(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.billing.meter_event_adjustments.create(
            {"type": "cancel", "event_name": "readings", "cancel": {"identifier": "never"}}
        )
    assert raised.value.param == "cancel[identifier]"
