"""Fixtures for Stripe: the project's emulator over real HTTP, reached by the official SDK."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from billing_pipeline.stripe_client import RetryRule, StripeBilling
from billing_pipeline.stripe_reporting.meter_sync import sync_meters
from billing_pipeline.usage.meters import METERS
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

TEST_KEY = "sk_test_billing_pipeline"
# Retries that keep fault-injection tests quick while still backing off.
FAST_RETRY = RetryRule(attempts=8, base_seconds=0.01, cap_seconds=0.2)


@pytest.fixture(scope="session")
def stripe_emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(port=0) as emulator:
        yield emulator


@pytest.fixture
def emulator(stripe_emulator: StripeEmulator) -> EmulatorControl:
    """The emulator, emptied, with real time, no faults and the declared meters created."""
    control = stripe_emulator.control
    control.reset()
    sync_meters(StripeBilling(TEST_KEY, stripe_emulator.url), METERS)
    return control


@pytest.fixture
def stripe_billing(stripe_emulator: StripeEmulator, emulator: EmulatorControl) -> StripeBilling:
    return StripeBilling(TEST_KEY, stripe_emulator.url, retry=FAST_RETRY)
