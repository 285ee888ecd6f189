"""Pre-aggregated meters (`event_time_window` day/hour): one surviving event per customer window.

Every expectation is computed here from the events the test sends, under the rule Stripe's
usage-based billing docs give ("only the most recent meter event within the hourly or daily
window"), for both readings of "most recent" (the emulator's `newer` switch).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stripe

from stripe_emulator import EmulatorControl, StripeEmulator
from stripe_emulator.clock import iso8601

HOUR = 3600
DAY = 86400
WINDOWS = {"day": DAY, "hour": HOUR}
NEWER_MODES = pytest.mark.parametrize("newer", ["arrival", "timestamp"])
WINDOW_NAMES = pytest.mark.parametrize("window", ["day", "hour"])


class Meter:
    """One meter, its window size and the first of three whole windows in the emulator's past."""

    def __init__(self, stripe_client: stripe.StripeClient, meter: Any, first_window: int) -> None:
        self.client = stripe_client
        self.id: str = meter.id
        self.event_name: str = meter.event_name
        self.size = WINDOWS[meter.event_time_window] if meter.event_time_window else DAY
        self.w0 = first_window
        self._sent = 0

    def at(self, window: int, tenth: int) -> int:
        """A timestamp `tenth` tenths into window `window` (0, 1, 2)."""
        return self.w0 + window * self.size + tenth * self.size // 10

    def send(self, customer: str, value: int, ts: int) -> str:
        self._sent += 1
        identifier = f"{self.event_name}-{customer}-{self._sent}"
        self.client.v1.billing.meter_events.create(
            {
                "event_name": self.event_name,
                "payload": {"stripe_customer_id": customer, "value": str(value)},
                "timestamp": ts,
                "identifier": identifier,
            }
        )
        return identifier

    def cancel(self, identifier: str) -> None:
        self.client.v1.billing.meter_event_adjustments.create(
            {"event_name": self.event_name, "type": "cancel", "cancel": {"identifier": identifier}}
        )

    def per_window(self, customer: str, grouping: str | None = None) -> list[float]:
        """The three windows' summaries (grouped by the meter's own window unless told)."""
        name = grouping or ("hour" if self.size == HOUR else "day")
        end = self.w0 + 3 * self.size
        page = self.client.v1.billing.meters.event_summaries.list(
            self.id,
            {
                "customer": customer,
                "start_time": self.w0 - self.w0 % WINDOWS[name],
                "end_time": end + (-end) % WINDOWS[name],
                "value_grouping_window": name,
                "limit": 100,
            },
        )
        return [s.aggregated_value for s in page.data]

    def period(self, customer: str) -> float:
        """One summary over the whole range: what the customer is billed for it."""
        page = self.client.v1.billing.meters.event_summaries.list(
            self.id,
            {"customer": customer, "start_time": self.w0, "end_time": self.w0 + 3 * self.size},
        )
        (summary,) = page.data
        return float(summary.aggregated_value)


@pytest.fixture
def customers(stripe_client: stripe.StripeClient) -> tuple[str, str]:
    a = stripe_client.v1.customers.create({"email": "a@example.com"}).id
    b = stripe_client.v1.customers.create({"email": "b@example.com"}).id
    return a, b


@pytest.fixture
def meter_with(
    stripe_client: stripe.StripeClient,
    make_meter: Callable[..., Any],
    emulator_at_noon: EmulatorControl,
) -> Callable[..., Meter]:
    """A meter whose three windows are whole days (or hours) ending before yesterday."""
    today = emulator_at_noon.now() - emulator_at_noon.now() % DAY

    def create(formula: str, window: str | None) -> Meter:
        extra = {"event_time_window": window} if window else {}
        meter = make_meter(f"{formula}_{window or 'raw'}", formula, **extra)
        return Meter(stripe_client, meter, today - 4 * DAY)

    return create


def test_meter_object_carries_its_event_time_window(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    raw = make_meter("raw_readings")
    daily = make_meter("daily_readings", event_time_window="day")
    hourly = make_meter("hourly_readings", event_time_window="hour")
    assert (raw.event_time_window, daily.event_time_window) == (None, "day")
    assert stripe_client.v1.billing.meters.retrieve(hourly.id).event_time_window == "hour"
    listed = {m.id: m.event_time_window for m in stripe_client.v1.billing.meters.list().data}
    assert listed == {raw.id: None, daily.id: "day", hourly.id: "hour"}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        make_meter("weekly_readings", event_time_window="week")
    assert refused.value.param == "event_time_window"


def test_event_time_window_cannot_be_changed_after_creation(
    stripe_client: stripe.StripeClient, make_meter: Callable[..., Any]
) -> None:
    meter = make_meter("readings", event_time_window="day")
    change: Any = {"event_time_window": "hour"}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.billing.meters.update(meter.id, change)
    assert refused.value.http_status == 400
    assert refused.value.param == "event_time_window"
    assert refused.value.error is not None and refused.value.error.type == "invalid_request_error"
    renamed = stripe_client.v1.billing.meters.update(meter.id, {"display_name": "Readings per day"})
    assert (renamed.display_name, renamed.event_time_window) == ("Readings per day", "day")


@WINDOW_NAMES
@NEWER_MODES
def test_sum_keeps_one_event_per_customer_window(
    meter_with: Callable[..., Meter],
    customers: tuple[str, str],
    emulator_at_noon: EmulatorControl,
    window: str,
    newer: str,
) -> None:
    emulator_at_noon.set_newer_mode(newer)
    a, b = customers
    meter = meter_with("sum", window)
    meter.send(a, 10, meter.at(0, 5))
    meter.send(a, 7, meter.at(0, 2))  # arrives last, earlier timestamp
    meter.send(b, 100, meter.at(0, 9))  # B's window: never overwrites A's
    meter.send(a, 4, meter.at(1, 1))
    meter.send(b, 1, meter.at(2, 0))
    a_first = 7.0 if newer == "arrival" else 10.0
    assert meter.per_window(a) == [a_first, 4.0, 0.0]
    assert meter.per_window(b) == [100.0, 0.0, 1.0]
    assert meter.period(a) == a_first + 4.0
    assert meter.period(b) == 101.0


@NEWER_MODES
def test_a_day_of_an_hourly_meter_sums_its_hours_survivors(
    meter_with: Callable[..., Meter], customer: str, emulator_at_noon: EmulatorControl, newer: str
) -> None:
    emulator_at_noon.set_newer_mode(newer)
    meter = meter_with("sum", "hour")
    meter.send(customer, 3, meter.at(0, 1))
    meter.send(customer, 5, meter.at(0, 4))  # newer both ways: replaces 3
    meter.send(customer, 8, meter.at(2, 6))
    meter.send(customer, 2, meter.at(2, 3))  # arrives last, earlier timestamp
    third = 2.0 if newer == "arrival" else 8.0
    assert meter.per_window(customer, grouping="day") == [5.0 + third]


@WINDOW_NAMES
@NEWER_MODES
def test_a_correction_replaces_the_window_and_a_cancel_restores_it(
    meter_with: Callable[..., Meter],
    customer: str,
    emulator_at_noon: EmulatorControl,
    window: str,
    newer: str,
) -> None:
    emulator_at_noon.set_newer_mode(newer)
    meter = meter_with("sum", window)
    original = meter.send(customer, 5, meter.at(1, 2))
    correction = meter.send(customer, 8, meter.at(1, 3))  # later in time and in arrival
    assert meter.per_window(customer) == [0.0, 8.0, 0.0]
    meter.cancel(correction)  # removed before windowing: the original survives again
    assert meter.per_window(customer) == [0.0, 5.0, 0.0]
    meter.cancel(original)
    assert meter.per_window(customer) == [0.0, 0.0, 0.0]
    assert meter.period(customer) == 0.0


@WINDOW_NAMES
@NEWER_MODES
def test_count_is_one_per_window_with_an_event(
    meter_with: Callable[..., Meter],
    customers: tuple[str, str],
    emulator_at_noon: EmulatorControl,
    window: str,
    newer: str,
) -> None:
    emulator_at_noon.set_newer_mode(newer)
    a, b = customers
    meter = meter_with("count", window)
    for tenth, value in ((1, 50), (4, 1), (2, 9)):
        meter.send(a, value, meter.at(0, tenth))
    only = meter.send(a, 2, meter.at(2, 5))
    meter.send(b, 3, meter.at(0, 5))
    assert meter.per_window(a) == [1.0, 0.0, 1.0]
    assert meter.per_window(b) == [1.0, 0.0, 0.0]
    assert meter.period(a) == 2.0
    meter.cancel(only)
    assert meter.period(a) == 1.0


@WINDOW_NAMES
@NEWER_MODES
def test_last_is_the_latest_windows_survivor_whatever_arrives_later(
    meter_with: Callable[..., Meter],
    customers: tuple[str, str],
    emulator_at_noon: EmulatorControl,
    window: str,
    newer: str,
) -> None:
    emulator_at_noon.set_newer_mode(newer)
    a, b = customers
    meter = meter_with("last", window)
    meter.send(a, 3, meter.at(0, 5))
    meter.send(a, 6, meter.at(2, 7))
    meter.send(a, 9, meter.at(2, 4))  # arrives last, earlier timestamp
    meter.send(b, 40, meter.at(1, 1))
    latest = 9.0 if newer == "arrival" else 6.0
    assert meter.per_window(a) == [3.0, 0.0, latest]
    assert meter.period(a) == latest
    meter.send(a, 30, meter.at(0, 8))  # a late correction of the first window
    assert meter.per_window(a) == [30.0, 0.0, latest]
    assert meter.period(a) == latest
    emulator_at_noon.set_last_mode("arrival")  # the raw-meter switch does not reorder windows
    assert meter.period(a) == latest
    assert meter.period(b) == 40.0


def test_raw_meters_still_count_every_event(
    meter_with: Callable[..., Meter], customer: str, emulator_at_noon: EmulatorControl
) -> None:
    total, count = meter_with("sum", None), meter_with("count", None)
    for meter in (total, count):
        meter.send(customer, 10, meter.at(0, 5))
        meter.send(customer, 10, meter.at(0, 5))  # same timestamp: both count
        meter.send(customer, 7, meter.at(0, 2))
    for newer in ("arrival", "timestamp"):
        emulator_at_noon.set_newer_mode(newer)
        assert total.per_window(customer) == [27.0, 0.0, 0.0]
        assert count.per_window(customer) == [3.0, 0.0, 0.0]


def test_v2_stream_events_are_windowed_with_v1_events(
    emulator_server: StripeEmulator,
    stripe_client: stripe.StripeClient,
    meter_with: Callable[..., Meter],
    customer: str,
) -> None:
    meter = meter_with("sum", "day")
    meter.send(customer, 5, meter.at(0, 1))
    token = stripe_client.v2.billing.meter_event_session.create().authentication_token
    streamer = stripe.StripeClient(
        token, base_addresses={"api": emulator_server.url, "meter_events": emulator_server.url}
    )
    events: Any = [
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "timestamp": iso8601(meter.at(window, 2)),
            "identifier": f"v2-{window}-{value}",
        }
        for window, value in ((0, 12), (1, 4), (1, 6))
    ]
    streamer.v2.billing.meter_event_stream.create({"events": events})
    assert meter.per_window(customer) == [12.0, 6.0, 0.0]


def test_control_refuses_an_unknown_newer_mode(emulator_at_noon: EmulatorControl) -> None:
    with pytest.raises(ValueError, match="newer"):
        emulator_at_noon.set_newer_mode("first")


def test_newer_mode_is_a_startup_option_that_reset_and_a_state_file_keep(
    tmp_path: Path,
) -> None:
    state_file = tmp_path / "emulator.json"
    with StripeEmulator(port=0, newer_mode="timestamp", state_file=state_file) as first:
        first.control.set_newer_mode("arrival")  # saved in the state file
    with StripeEmulator(port=0, newer_mode="timestamp", state_file=state_file) as emulator:
        stripe_client = stripe.StripeClient(
            "sk_test_x", base_addresses={"api": emulator.url, "meter_events": emulator.url}
        )
        assert _first_window_value(stripe_client, emulator.control) == 10.0
        emulator.control.set_newer_mode("arrival")
        emulator.control.reset()
        assert _first_window_value(stripe_client, emulator.control) == 10.0


def test_cli_newer_flag_sets_the_mode() -> None:
    argv = ["stripe-emulator", "--port", "0", "--newer", "timestamp"]
    process = subprocess.Popen(
        [sys.executable, "-m", "billing_pipeline.cli", *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        url = lines[1].strip().removeprefix("STRIPE_API_BASE=")
        stripe_client = stripe.StripeClient("sk_test_x", base_addresses={"api": url})
        assert _first_window_value(stripe_client, EmulatorControl(url)) == 10.0
    finally:
        process.terminate()
        process.wait(timeout=10)


def _first_window_value(
    stripe_client: stripe.StripeClient, emulator_at_noon: EmulatorControl
) -> float:
    """10 if the later timestamp survives, 7 if the later arrival does."""
    meter = stripe_client.v1.billing.meters.create(
        {
            "display_name": "Readings",
            "event_name": "readings",
            "default_aggregation": {"formula": "sum"},
            "event_time_window": "day",
        }
    )
    customer = stripe_client.v1.customers.create({"email": "c@example.com"}).id
    yesterday = emulator_at_noon.now() - emulator_at_noon.now() % DAY - DAY
    for value, ts in ((10, yesterday + 5 * HOUR), (7, yesterday + 2 * HOUR)):
        stripe_client.v1.billing.meter_events.create(
            {
                "event_name": "readings",
                "payload": {"stripe_customer_id": customer, "value": str(value)},
                "timestamp": ts,
            }
        )
    page = stripe_client.v1.billing.meters.event_summaries.list(
        meter.id, {"customer": customer, "start_time": yesterday, "end_time": yesterday + DAY}
    )
    return float(page.data[0].aggregated_value)
