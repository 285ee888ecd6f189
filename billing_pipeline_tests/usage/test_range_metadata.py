"""A range run reports every day's partition with that day's own figures, not the window's.

Single-run backfills materialize many daily partitions in one run; the UI's per-partition
metadata and its plots over partitions are only true if each day carries its own numbers.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from sqlalchemy import Engine, text

from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.resources import PostgresResource
from billing_pipeline.usage.assets import build_usage_assets, usage_asset_key
from billing_pipeline.usage.meters import ACTIVE_SENSORS, TEMPERATURE_READINGS
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)

# Days of their own, so no other test's materializations of these partitions get in the way.
FIRST = date(2025, 3, 10)
DAYS = [FIRST + timedelta(days=offset) for offset in range(3)]
RANGE_TAGS = {
    "dagster/asset_partition_range_start": DAYS[0].isoformat(),
    "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
}


def seed(engine: Engine) -> None:
    """Usage that differs every day: sensors come and go, reading counts change."""
    for organization in (1, 2, 3):
        add_organization(engine, organization)
    add_sensor(engine, 1, 1, midnight(FIRST) - timedelta(days=5))
    add_sensor(engine, 2, 1, midnight(FIRST) + timedelta(hours=9))
    add_sensor(
        engine, 3, 2, midnight(FIRST) - timedelta(days=1), midnight(DAYS[1]) + timedelta(hours=3)
    )
    add_sensor(engine, 4, 3, midnight(DAYS[2]) + timedelta(hours=1))
    readings = {(1, 0): 5, (2, 0): 3, (3, 0): 4, (1, 1): 8, (3, 1): 2, (2, 2): 6, (4, 2): 11}
    for (sensor, offset), count in readings.items():
        add_readings(engine, sensor, DAYS[offset], count)
    # Outside the window on both sides: must not leak into the first or last day.
    add_readings(engine, 1, FIRST - timedelta(days=1), 50)
    add_readings(engine, 1, DAYS[-1] + timedelta(days=1), 70)


def expected_from_source(engine: Engine) -> dict[str, dict[date, dict[int, int]]]:
    """Each meter's value per day and organization, computed here from the raw rows."""
    with engine.connect() as connection:
        sensors = connection.execute(
            text("SELECT id, organization_id, created_at, deactivated_at FROM sensors")
        ).all()
        readings = connection.execute(
            text("SELECT sensor_id, recorded_at FROM temperature_readings")
        ).all()
    organization_of = {sensor.id: sensor.organization_id for sensor in sensors}
    active: dict[date, dict[int, int]] = {}
    counted: dict[date, dict[int, int]] = {}
    for day in DAYS:
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        existing = [s for s in sensors if s.created_at < end]
        active[day] = {
            organization: sum(
                1
                for s in existing
                if s.organization_id == organization
                and (s.deactivated_at is None or s.deactivated_at >= end)
            )
            for organization in {s.organization_id for s in existing}
        }
        counted[day] = dict(
            Counter(
                organization_of[r.sensor_id]
                for r in readings
                if end - timedelta(days=1) <= r.recorded_at < end
            )
        )
    return {ACTIVE_SENSORS.name: active, TEMPERATURE_READINGS.name: counted}


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str
) -> dg.EventLogRecord:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    )
    [record] = result.records
    return record


def test_a_range_run_reports_each_day_with_its_own_figures(
    engine: Engine, database_url: str, dagster_instance: dg.DagsterInstance
) -> None:
    seed(engine)
    expected = expected_from_source(engine)
    # The source really differs by day, so window totals on every day could not pass.
    assert len({sum(v.values()) for v in expected[TEMPERATURE_READINGS.name].values()}) == 3

    result = dg.materialize(
        build_usage_assets(),
        instance=dagster_instance,
        resources={"postgres": PostgresResource(database_url=database_url)},
        tags=RANGE_TAGS,
    )
    assert result.success

    for meter in (ACTIVE_SENSORS, TEMPERATURE_READINGS):
        for day in DAYS:
            values = expected[meter.name][day]
            record = latest_materialization(
                dagster_instance, usage_asset_key(meter), day.isoformat()
            )
            assert record.run_id == result.run_id  # one run materialized the whole range
            assert record.asset_materialization is not None
            metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
            top = sorted(values.items(), key=lambda item: (-item[1], item[0]))
            assert metadata == {
                "dagster/row_count": len(values),
                "organizations": len(values),
                "total": sum(values.values()),
                "preview": markdown_table(
                    ("organization", "value"), top, numeric=("organization", "value")
                ).value,
                "run window": f"{DAYS[0]} to {DAYS[-1]} (3 days)",
            }, (meter.name, day)
