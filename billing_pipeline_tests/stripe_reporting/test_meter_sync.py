"""`billing-pipeline stripe sync-meters`: create what is missing, change nothing that matches."""

from __future__ import annotations

import pytest

from billing_pipeline.cli import main
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.meter_sync import (
    MeterMismatchError,
    sync_meters,
    verify_meters,
)
from billing_pipeline.usage.meters import METERS
from billing_pipeline_tests.support.stripe import TEST_KEY
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator


def test_sync_creates_missing_meters_once(
    emulator_server: StripeEmulator, emulator_control: EmulatorControl
) -> None:
    emulator_control.reset()
    stripe_billing = StripeBilling(TEST_KEY, emulator_server.url)

    first = sync_meters(stripe_billing, METERS)
    second = sync_meters(stripe_billing, METERS)

    assert first.created == ["active_sensors", "temperature_readings"]
    assert second.created == [] and second.unchanged == first.created
    remote = verify_meters(stripe_billing, METERS)
    assert {name: m.formula for name, m in remote.items()} == {
        "active_sensors": "last",
        "temperature_readings": "sum",
    }
    assert len(stripe_billing.list_meters()) == 2


def test_a_meter_with_another_formula_is_refused_and_nothing_is_created(
    emulator_server: StripeEmulator, emulator_control: EmulatorControl
) -> None:
    emulator_control.reset()
    stripe_billing = StripeBilling(TEST_KEY, emulator_server.url)
    stripe_billing.client.v1.billing.meters.create(
        {
            "display_name": "Sensors",
            "event_name": "active_sensors",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )

    with pytest.raises(MeterMismatchError, match="aggregates with 'sum' but 'active_sensors'"):
        sync_meters(stripe_billing, METERS)
    assert [m.event_name for m in stripe_billing.list_meters()] == ["active_sensors"]


def test_verify_names_every_missing_meter(
    emulator_server: StripeEmulator, emulator_control: EmulatorControl
) -> None:
    emulator_control.reset()
    with pytest.raises(MeterMismatchError) as error:
        verify_meters(StripeBilling(TEST_KEY, emulator_server.url), METERS)
    assert "active_sensors" in str(error.value) and "temperature_readings" in str(error.value)
    assert "billing-pipeline stripe sync-meters" in str(error.value)


def test_the_cli_reads_the_key_and_base_from_the_environment(
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator_control.reset()
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", emulator_server.url)

    assert main(["stripe", "sync-meters"]) == 0
    assert main(["stripe", "sync-meters"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("meters created: active_sensors, temperature_readings")
    assert out[1].startswith("meters created: none; already matching: active_sensors")


def test_the_cli_without_a_key_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    with pytest.raises(SystemExit, match="STRIPE_SECRET_KEY is not set"):
        main(["stripe", "sync-meters"])
