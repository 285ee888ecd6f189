"""Declaring a meter is one declaration: it becomes its own asset and is reported to Stripe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import Engine, text

from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.assets import build_reporting_asset
from billing_pipeline.stripe_reporting.meter_sync import sync_meters
from billing_pipeline.usage.assets import build_usage_assets
from billing_pipeline.usage.meters import METERS, Meter
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.stripe import TEST_KEY
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

COLD_READINGS = Meter(
    name="cold_readings",
    event_name="cold_readings",
    aggregation="sum",
    display_name="Readings below 0 °C",
    description="Readings below freezing, for cold-chain alerting plans.",
    sql="""
        SELECT (r.recorded_at AT TIME ZONE 'UTC')::date AS day, s.organization_id, count(*) AS value
        FROM temperature_readings r JOIN sensors s ON s.id = r.sensor_id
        WHERE r.recorded_at >= CAST(:start AS timestamptz)
          AND r.recorded_at < CAST(:end AS timestamptz) AND r.celsius < 0
        GROUP BY 1, 2
    """,
)


def test_a_third_meter_is_its_own_asset_and_is_billed(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    stripe_emulator: StripeEmulator,
    emulator: EmulatorControl,
    stripe_billing: StripeBilling,
) -> None:
    meters = (*METERS, COLD_READINGS)
    sync_meters(stripe_billing, meters)
    customer = stripe_billing.client.v1.customers.create({"name": "Cold"}).id
    day = datetime.now(UTC).date() - timedelta(days=2)
    add_organization(engine, 1, customer=customer)
    add_sensor(engine, 1, 1, midnight(day) - timedelta(days=1))
    add_readings(engine, 1, day, 6)
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE temperature_readings SET celsius = -3 "
                "WHERE id = (SELECT min(id) FROM temperature_readings)"
            )
        )

    usage_assets = build_usage_assets(meters)
    assert dg.AssetKey(["usage", "cold_readings"]) in {a.key for a in usage_assets}
    result = dg.materialize(
        [*usage_assets, build_reporting_asset(meters)],
        partition_key=day.isoformat(),
        instance=dagster_instance,
        resources={
            "postgres": PostgresResource(database_url=database_url),
            "stripe": StripeResource(secret_key=TEST_KEY, api_base=stripe_emulator.url),
        },
    )

    assert result.success
    sent = {e["event_name"]: e["value"] for e in emulator.meter_events()}
    assert sent == {"active_sensors": 1, "temperature_readings": 6, "cold_readings": 1}
