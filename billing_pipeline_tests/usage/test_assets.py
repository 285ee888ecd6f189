"""Declaring a meter is one declaration: it becomes its own asset and is reported to Stripe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import text

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
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.stripe import new_customer

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
    part_sql="""
        SELECT p.organization_id, p.part_start, count(r.id) AS value
        FROM parts p
        JOIN sensors s ON s.organization_id = p.organization_id
        LEFT JOIN temperature_readings r
            ON r.sensor_id = s.id AND r.celsius < 0
           AND r.recorded_at >= p.part_start AND r.recorded_at < p.part_end
        GROUP BY 1, 2
    """,
)


def test_a_third_meter_is_its_own_asset_and_is_billed(
    billing: Billing,
) -> None:
    engine = billing.engine
    meters = (*METERS, COLD_READINGS)
    sync_meters(billing.stripe_billing, meters)
    customer = new_customer(billing.stripe_billing, "Cold")
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
    result = billing.materialize_day(day, [*usage_assets, build_reporting_asset(meters)])

    assert result.success
    sent = {e["event_name"]: e["value"] for e in billing.emulator.meter_events()}
    assert sent == {"active_sensors": 1, "temperature_readings": 6, "cold_readings": 1}
