"""What the pipeline bills: one declaration per Stripe meter.

A meter's SQL yields `(day, organization_id, value)` for every UTC day in `[:start, :end)`, so a
range backfill is one query over the whole window instead of one per day. Its `part_sql` measures
the same thing over parts of days (a day cut at a billing period's end): it reads a relation
`parts (organization_id, part_start, part_end)` and yields `(organization_id, part_start,
value)`; over a whole day it must give the daily SQL's value (a test holds them equal). `:start`
and `:end` are day-aligned `timestamptz` values and the session time zone is UTC. The SQL may
only read source rows that belong to the days it reports (invariant 2: a backfill months later
gives the same numbers); gauges are computed from created/deactivated history, never from a
current flag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Aggregation = Literal["sum", "last"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class Meter:
    """A Stripe Billing Meter and the SQL that measures it.

    `aggregation` must equal the Stripe meter's `default_aggregation.formula`: `sum` for counters
    (corrections are sent as differences) and `last` for gauges (corrections resend the value).
    """

    name: str
    event_name: str
    aggregation: Aggregation
    display_name: str
    description: str
    sql: str
    part_sql: str

    def __post_init__(self) -> None:
        # The name is part of every ledger identifier, which Stripe caps at 100 characters.
        if not _NAME.match(self.name):
            raise ValueError(f"meter name {self.name!r} must match {_NAME.pattern}")
        if self.aggregation not in ("sum", "last"):
            raise ValueError(f"meter {self.name}: aggregation must be 'sum' or 'last'")


ACTIVE_SENSORS = Meter(
    name="active_sensors",
    event_name="active_sensors",
    aggregation="last",
    display_name="Active sensors",
    description=(
        "Sensors active at the end of each UTC day (created before midnight and not deactivated "
        "by then), per organization. Organizations whose sensors are all gone report 0 so the "
        "period's last value drops too."
    ),
    sql="""
        SELECT (d.day_start AT TIME ZONE 'UTC')::date AS day,
               s.organization_id,
               count(*) FILTER (
                   WHERE s.deactivated_at IS NULL
                      OR s.deactivated_at >= d.day_start + interval '1 day'
               ) AS value
        FROM generate_series(
                 CAST(:start AS timestamptz),
                 CAST(:end AS timestamptz) - interval '1 day',
                 interval '1 day'
             ) AS d(day_start)
        JOIN sensors s ON s.created_at < d.day_start + interval '1 day'
        GROUP BY 1, 2
    """,
    part_sql="""
        SELECT p.organization_id, p.part_start,
               count(s.id) FILTER (
                   WHERE s.deactivated_at IS NULL OR s.deactivated_at >= p.part_end
               ) AS value
        FROM parts p
        LEFT JOIN sensors s
            ON s.organization_id = p.organization_id AND s.created_at < p.part_end
        GROUP BY 1, 2
    """,
)

TEMPERATURE_READINGS = Meter(
    name="temperature_readings",
    event_name="temperature_readings",
    aggregation="sum",
    display_name="Temperature readings",
    description="Readings recorded in each UTC day, per organization.",
    # Counting per sensor first and joining the (few) per-sensor counts to `sensors` avoids a
    # hash join over every reading: about 20% faster on a day of 3.5 million readings.
    sql="""
        SELECT per_sensor.day, s.organization_id, sum(per_sensor.readings)::bigint AS value
        FROM (
            SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, sensor_id, count(*) AS readings
            FROM temperature_readings
            WHERE recorded_at >= CAST(:start AS timestamptz)
              AND recorded_at < CAST(:end AS timestamptz)
            GROUP BY 1, 2
        ) AS per_sensor
        JOIN sensors s ON s.id = per_sensor.sensor_id
        GROUP BY 1, 2
    """,
    part_sql="""
        SELECT p.organization_id, p.part_start, count(r.id) AS value
        FROM parts p
        JOIN sensors s ON s.organization_id = p.organization_id
        LEFT JOIN temperature_readings r
            ON r.sensor_id = s.id AND r.recorded_at >= p.part_start AND r.recorded_at < p.part_end
        GROUP BY 1, 2
    """,
)

METERS: tuple[Meter, ...] = (ACTIVE_SENSORS, TEMPERATURE_READINGS)


def meter_by_name(name: str, meters: tuple[Meter, ...] = METERS) -> Meter:
    for meter in meters:
        if meter.name == name:
            return meter
    raise KeyError(f"no meter named {name!r}; declared: {', '.join(m.name for m in meters)}")
