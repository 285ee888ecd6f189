"""A range run reports each day's `stripe/meter_events` partition with that day's own figures.

One run of a single-run backfill materializes every day of its window; the UI's per-partition
metadata and its plots over partitions are only true if each day carries its own numbers: what
the source bills that day, what the ledger says Stripe holds, and what this run sent for it.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import text

from billing_pipeline.stripe_reporting.assets import REPORTING_KEY
from billing_pipeline.usage.meters import ACTIVE_SENSORS, TEMPERATURE_READINGS
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import BILLING_ASSETS, Billing
from billing_pipeline_tests.support.stripe import new_customer

TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=offset) for offset in (6, 5, 4)]
RANGE_TAGS = {
    "dagster/asset_partition_range_start": DAYS[0].isoformat(),
    "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
}


def test_a_range_run_reports_each_day_with_its_own_figures(billing: Billing) -> None:
    alpha = new_customer(billing.stripe_billing, "Alpha")
    beta = new_customer(billing.stripe_billing, "Beta")
    add_organization(billing.engine, 1, customer=alpha)
    add_organization(billing.engine, 2, customer=beta)
    add_organization(billing.engine, 3)  # the free tier: usage, but no customer
    add_sensor(billing.engine, 1, 1, midnight(DAYS[0]) - timedelta(days=2))
    add_sensor(billing.engine, 2, 1, midnight(DAYS[1]) + timedelta(hours=8))
    add_sensor(billing.engine, 3, 2, midnight(DAYS[0]) - timedelta(days=2))
    add_sensor(billing.engine, 4, 3, midnight(DAYS[0]) - timedelta(days=2))
    readings = {(1, 0): 5, (3, 0): 2, (1, 1): 9, (2, 1): 4, (3, 2): 6, (4, 0): 30, (4, 2): 40}
    for (sensor, offset), count in readings.items():
        add_readings(billing.engine, sensor, DAYS[offset], count)

    # What the source bills per customer and day, written out from the rows above (sensor 4 is
    # the free tier's); a customer-day without usage sends no event.
    readings_of = {alpha: (5, 9 + 4, 0), beta: (2, 0, 6)}
    sensors_of = {alpha: (1, 2, 2), beta: (1, 1, 1)}
    billed_readings = {day: sum(v[i] for v in readings_of.values()) for i, day in enumerate(DAYS)}
    billed_sensors = {day: sum(v[i] for v in sensors_of.values()) for i, day in enumerate(DAYS)}
    events = {
        day: sum(1 for v in (*readings_of.values(), *sensors_of.values()) if v[i])
        for i, day in enumerate(DAYS)
    }
    assert len(set(billed_readings.values())) == 3  # window totals on every day could not pass

    result = dg.materialize(
        BILLING_ASSETS, instance=billing.instance, resources=billing.resources(), tags=RANGE_TAGS
    )
    assert result.success

    sent_per_day: Counter[object] = Counter(
        datetime.fromtimestamp(event["timestamp"], UTC).date()
        for event in billing.emulator.meter_events()
    )
    with billing.engine.connect() as connection:
        ledger_rows = Counter(
            connection.execute(text("SELECT day FROM billing.meter_ledger")).scalars()
        )
    for day in DAYS:
        records = billing.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=REPORTING_KEY, asset_partitions=[day.isoformat()]),
            limit=1,
        ).records
        [record] = records
        assert record.run_id == result.run_id  # one run materialized the whole range
        assert record.asset_materialization is not None
        metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        assert metadata[f"source_total/{TEMPERATURE_READINGS.name}"] == billed_readings[day]
        assert metadata[f"ledger_total/{TEMPERATURE_READINGS.name}"] == billed_readings[day]
        assert metadata[f"source_total/{ACTIVE_SENSORS.name}"] == billed_sensors[day]
        assert metadata[f"ledger_total/{ACTIVE_SENSORS.name}"] == billed_sensors[day]
        # One event per customer, meter and day with usage, all of it this run's work.
        assert metadata["sent"] == sent_per_day[day] == events[day], day
        assert metadata["planned"] == ledger_rows[day] == events[day], day
        assert metadata["ledger_sent"] == events[day], day
        assert metadata["failed"] == 0
        # Inclusive and counted, as every range a person reads is written.
        assert metadata["run window"] == f"{DAYS[0]} to {DAYS[-1]} (3 days)"
        assert metadata["run/sent"] == sum(events.values())

    # The run's log says, in the same words, which days it computed, how many rows it planned
    # and how many of them it sent.
    messages = [e.user_message for e in billing.instance.all_logs(result.run_id)]
    window = f"{DAYS[0]} to {DAYS[-1]} (3 days)"
    assert any(m.startswith(f"temperature_readings {window}: ") for m in messages)
    total = sum(events.values())
    assert any(m.startswith(f"sent {total} of {total} planned ledger rows") for m in messages)
    assert any("0 of them Stripe already held from an earlier attempt" in m for m in messages)
