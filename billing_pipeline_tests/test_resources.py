"""Choosing the meter event API for one run (run config) and for a deployment (environment).

Runs go through the real reporting asset on a real Dagster instance, with the Stripe resource
bound exactly as `definitions.py` binds it (`stripe_from_environment`), so what a user types
(`--config-json`, or `STRIPE_METER_EVENT_API` in the deployment's environment) is what is tested.
The emulator records which API carried each event.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine

from billing_pipeline import config
from billing_pipeline.resources import PostgresResource, stripe_from_environment
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import BILLING_ASSETS, Billing
from billing_pipeline_tests.support.stripe import TEST_KEY, new_customer

DAY = datetime.now(UTC).date() - timedelta(days=2)
# What `dagster asset materialize --config-json '...'` and the UI's launchpad pass for one run.
V2_FOR_ONE_RUN = {"resources": {"stripe": {"config": {"meter_event_api": "v2"}}}}


@pytest.fixture
def one_customer(engine: Engine, stripe_billing: StripeBilling) -> str:
    """One paying organization with 2 sensors and 5 readings on DAY: 2 events for the day."""
    customer = new_customer(stripe_billing, "Alpha")
    add_organization(engine, 1, customer=customer)
    add_sensor(engine, 11, 1, midnight(DAY) - timedelta(days=3))
    add_sensor(engine, 12, 1, midnight(DAY) - timedelta(days=3))
    add_readings(engine, 11, DAY, 5)
    return customer


@pytest.fixture
def deployment_env(billing: Billing, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The deployment's environment: the key and API base set, no API chosen."""
    monkeypatch.setenv(config.STRIPE_SECRET_KEY, TEST_KEY)
    monkeypatch.setenv(config.STRIPE_API_BASE, billing.api_base)
    monkeypatch.delenv(config.STRIPE_METER_EVENT_API, raising=False)
    return monkeypatch


def run_day(billing: Billing, run_config: dict[str, Any] | None = None) -> Counter[str]:
    """Materialize DAY with the resource bound from the environment; the APIs that carried it."""
    result = dg.materialize(
        BILLING_ASSETS,
        partition_key=DAY.isoformat(),
        instance=billing.instance,
        resources={
            "postgres": PostgresResource(database_url=billing.database_url),
            "stripe": stripe_from_environment(),
        },
        run_config=run_config,
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return Counter(event["source"] for event in billing.emulator.meter_events())


@pytest.mark.usefixtures("one_customer")
def test_run_config_picks_v2_for_one_run_and_keeps_the_key_from_the_environment(
    billing: Billing, deployment_env: pytest.MonkeyPatch
) -> None:
    # Before the fix this partial config replaced the bound key: "STRIPE_SECRET_KEY is not set".
    assert run_day(billing, V2_FOR_ONE_RUN) == {"v2": 2}


@pytest.mark.usefixtures("one_customer")
def test_deployment_setting_sends_through_v2_without_run_config(
    billing: Billing, deployment_env: pytest.MonkeyPatch
) -> None:
    deployment_env.setenv(config.STRIPE_METER_EVENT_API, "v2")
    assert run_day(billing) == {"v2": 2}


@pytest.mark.usefixtures("one_customer")
def test_without_either_setting_events_go_through_v1(
    billing: Billing, deployment_env: pytest.MonkeyPatch
) -> None:
    assert run_day(billing) == {"v1": 2}


def test_a_bad_deployment_setting_stops_the_code_location_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(config.STRIPE_METER_EVENT_API, "v3")
    with pytest.raises(ValueError, match="STRIPE_METER_EVENT_API must be one of v1, v2, not 'v3'"):
        stripe_from_environment()
