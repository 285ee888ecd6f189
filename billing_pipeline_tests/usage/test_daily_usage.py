"""Daily usage is computed in Postgres from each day's own rows and replaces its window exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, text

from billing_pipeline.usage.daily_usage import refresh_daily_usage
from billing_pipeline.usage.meters import ACTIVE_SENSORS, METERS, TEMPERATURE_READINGS
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)

DAY = date(2026, 3, 10)
NEXT = DAY + timedelta(days=1)


def stored(engine: Engine, meter: str) -> dict[tuple[date, int], int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT day, organization_id, value FROM billing.daily_usage WHERE meter = :m"),
            {"m": meter},
        )
        return {(row.day, row.organization_id): row.value for row in rows}


def test_active_sensors_come_from_history_at_the_end_of_the_day(engine: Engine) -> None:
    add_organization(engine, 1)
    start = midnight(DAY)
    add_sensor(engine, 1, 1, start - timedelta(days=3))  # active all day
    add_sensor(engine, 2, 1, start + timedelta(hours=23, minutes=59))  # added late in the day
    add_sensor(engine, 3, 1, start - timedelta(days=3), start + timedelta(hours=12))  # removed
    add_sensor(engine, 4, 1, start - timedelta(days=3), midnight(NEXT))  # removed at midnight
    add_sensor(engine, 5, 1, midnight(NEXT))  # belongs to the next day

    refresh_daily_usage(engine, ACTIVE_SENSORS, midnight(DAY), midnight(NEXT))

    assert stored(engine, "active_sensors") == {(DAY, 1): 3}


def test_an_organization_whose_sensors_are_all_gone_reports_zero(engine: Engine) -> None:
    add_organization(engine, 1)
    add_sensor(engine, 1, 1, midnight(DAY) - timedelta(days=5), midnight(DAY) - timedelta(days=1))

    refresh_daily_usage(engine, ACTIVE_SENSORS, midnight(DAY), midnight(NEXT))

    assert stored(engine, "active_sensors") == {(DAY, 1): 0}


def test_readings_count_only_the_days_own_rows(engine: Engine) -> None:
    add_organization(engine, 1)
    add_organization(engine, 2)
    add_sensor(engine, 1, 1, midnight(DAY) - timedelta(days=1))
    add_sensor(engine, 2, 2, midnight(DAY) - timedelta(days=1))
    add_readings(engine, 1, DAY - timedelta(days=1), 5)
    add_readings(engine, 1, DAY, 7)
    add_readings(engine, 2, DAY, 2)
    add_readings(engine, 1, NEXT, 11)  # starts exactly at midnight: the next day's

    days = refresh_daily_usage(engine, TEMPERATURE_READINGS, midnight(DAY), midnight(NEXT))

    assert stored(engine, "temperature_readings") == {(DAY, 1): 7, (DAY, 2): 2}
    assert list(days) == [DAY]
    assert (days[DAY].rows, days[DAY].organizations, days[DAY].total) == (2, 2, 9)
    assert days[DAY].top == [(1, 7), (2, 2)]


def test_a_range_is_one_query_and_rerunning_replaces_only_its_window(engine: Engine) -> None:
    add_organization(engine, 1)
    add_sensor(engine, 1, 1, midnight(DAY) - timedelta(days=1))
    for offset, count in enumerate((3, 4, 5)):
        add_readings(engine, 1, DAY + timedelta(days=offset), count)
    end = midnight(DAY + timedelta(days=4))
    days = refresh_daily_usage(engine, TEMPERATURE_READINGS, midnight(DAY), end)
    # Each day reports its own figures; a day without usage is there, with zeros.
    assert {day: (u.rows, u.total, u.top) for day, u in days.items()} == {
        DAY: (1, 3, [(1, 3)]),
        NEXT: (1, 4, [(1, 4)]),
        DAY + timedelta(days=2): (1, 5, [(1, 5)]),
        DAY + timedelta(days=3): (0, 0, []),
    }
    assert stored(engine, "temperature_readings") == {
        (DAY, 1): 3,
        (NEXT, 1): 4,
        (DAY + timedelta(days=2), 1): 5,
    }

    # Late rows for the middle day; only that day is recomputed, the others keep their rows.
    add_readings(engine, 1, NEXT, 2)
    with engine.begin() as connection:
        connection.execute(
            text("DELETE FROM temperature_readings WHERE recorded_at < :d"), {"d": midnight(NEXT)}
        )
    refresh_daily_usage(
        engine, TEMPERATURE_READINGS, midnight(NEXT), midnight(NEXT + timedelta(days=1))
    )

    assert stored(engine, "temperature_readings") == {
        (DAY, 1): 3,
        (NEXT, 1): 6,
        (DAY + timedelta(days=2), 1): 5,
    }


def test_each_meters_part_sql_gives_its_daily_value_over_a_whole_day(engine: Engine) -> None:
    # A day cut at a billing boundary is measured by `part_sql`; over the whole day it must
    # agree with the daily SQL, or a day would bill differently once a period ends in it.
    day = datetime.now(UTC).date() - timedelta(days=2)
    for organization in (1, 2):
        add_organization(engine, organization)
    add_sensor(engine, 11, 1, midnight(day) - timedelta(days=3))
    add_sensor(
        engine, 12, 1, midnight(day) + timedelta(hours=5), midnight(day) + timedelta(hours=20)
    )
    add_sensor(engine, 21, 2, midnight(day) - timedelta(days=1), midnight(day) + timedelta(days=1))
    for sensor, count in ((11, 7), (12, 3), (21, 5)):
        add_readings(engine, sensor, day, count)
    for meter in METERS:
        daily = refresh_daily_usage(
            engine, meter, midnight(day), midnight(day + timedelta(days=1))
        )[day]
        with engine.connect() as connection:
            parts = connection.execute(
                text(
                    "WITH parts AS (SELECT o.id AS organization_id, "
                    "CAST(:start AS timestamptz) AS part_start, "
                    "CAST(:end AS timestamptz) AS part_end FROM organizations o) "
                    f"SELECT coalesce(sum(value), 0) FROM ({meter.part_sql}) AS p"
                ),
                {"start": midnight(day), "end": midnight(day + timedelta(days=1))},
            ).scalar_one()
        assert int(parts) == daily.total, meter.name
