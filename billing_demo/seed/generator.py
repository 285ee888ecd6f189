"""Pure, deterministic generators of demo rows for the application tables.

Every row is a function of `SeedOptions` alone: each organization, sensor and sensor-day draws
from its own `random.Random` seeded with a string naming it (string seeds hash with SHA-512, so
they do not depend on `PYTHONHASHSEED`). The output therefore never depends on the order or the
chunking in which a consumer iterates, and the same options always give the same rows.

Time model. The seeded range is the UTC days `start_date .. end_date` inclusive, i.e. the
half-open interval [range_start, range_end). Readings lie inside it, only while their sensor is
active. Their `ingested_at` is a few seconds after `recorded_at`, except for a small fraction of
*late* readings, ingested 1 to 3 days later. A late reading must not be ingested in the future
(the default end date is yesterday, so range_end is today 00:00 UTC, and "now" may be only
minutes later), so its ingestion is capped at range_end: only readings recorded at least a day
before range_end can be late, and their delay is drawn from [1 day, min(3 days, range_end -
recorded_at)]. Consequently the last seeded day never has late readings (its late data has not
arrived yet) and a one-day range has none at all. Only the regular few-seconds lag can carry a
reading recorded in the last seconds of the range past range_end.

Readings are produced as plain tuples of integers (microseconds since the Unix epoch, UTC) and
floats rather than datetimes: tens of millions of datetime objects would dominate the run time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

DAY_US = 86_400_000_000
SECOND_US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Sensor history: most sensors exist for the whole range; these shares do not.
CREATED_MID_RANGE_SHARE = 0.10
DEACTIVATED_MID_RANGE_SHARE = 0.08
RETIRED_BEFORE_RANGE_SHARE = 0.04
# A reading slot is skipped (a missed transmission) with this probability.
DROPOUT = 0.01
# Chance per cold-chain sensor-day of a door left open: a warm excursion of 30-90 minutes.
EXCURSION_CHANCE = 0.05
# Regular ingestion lag, in microseconds.
INGEST_LAG_US = (SECOND_US // 2, 5 * SECOND_US)
LATE_DELAY_US = (DAY_US, 3 * DAY_US)

ReadingRow = tuple[int, int, float, int]
"""(sensor_id, recorded_at_us, celsius, ingested_at_us); times in UTC microseconds since epoch."""

_NAME_FIRST = (
    "Northwind",
    "Blue Harbor",
    "Alpine",
    "Cedar",
    "Polar",
    "Riverside",
    "Summit",
    "Evergreen",
    "Granite",
    "Silverline",
    "Lakeshore",
    "Redwood",
)
_NAME_SECOND = (
    "Cold Storage",
    "Pharma",
    "Logistics",
    "Foods",
    "Labs",
    "Bakery",
    "Biotech",
    "Hospitals",
    "Markets",
    "Vaccines",
)


def yesterday_utc() -> date:
    """The last complete UTC day: the default last seeded day."""
    return datetime.now(UTC).date() - timedelta(days=1)


def to_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True)
class SeedOptions:
    """What to generate. Equal options give identical rows."""

    seed: int = 42
    organizations: int = 20
    days: int = 7
    sensors_per_org: int = 5
    readings_per_sensor_per_day: int = 48
    end_date: date = field(default_factory=yesterday_utc)
    paid_fraction: float = 0.7
    late_fraction: float = 0.001

    def __post_init__(self) -> None:
        for name in ("organizations", "days", "sensors_per_org", "readings_per_sensor_per_day"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("paid_fraction", "late_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")

    @property
    def start_date(self) -> date:
        return self.end_date - timedelta(days=self.days - 1)

    @property
    def range_start(self) -> datetime:
        return datetime.combine(self.start_date, datetime.min.time(), tzinfo=UTC)

    @property
    def range_end(self) -> datetime:
        """Exclusive end: 00:00 UTC after `end_date`."""
        return self.range_start + timedelta(days=self.days)

    @property
    def nominal_readings(self) -> int:
        """The requested size; actual counts are lower by sensor history and dropouts."""
        return (
            self.organizations * self.sensors_per_org * self.days * self.readings_per_sensor_per_day
        )


@dataclass(frozen=True, slots=True)
class Organization:
    id: int
    name: str
    created_at: datetime
    paid: bool


@dataclass(frozen=True, slots=True)
class Subscription:
    """A paying organization's subscription before Stripe knows it (see `subscriptions`)."""

    id: int
    organization_id: int
    started_at: datetime
    status: str = "incomplete"


@dataclass(frozen=True, slots=True)
class Sensor:
    """A sensor row plus the parameters its readings are drawn from."""

    id: int
    organization_id: int
    serial_number: str
    kind: str  # "cold_chain" (fridges, 2-8 °C) or "room" (~20 °C)
    created_at: datetime
    deactivated_at: datetime | None
    baseline: float
    amplitude: float
    peak_hour: float

    def active_us(self, start_us: int, end_us: int) -> tuple[int, int]:
        """The part of [start_us, end_us) in which the sensor is active (empty if lo >= hi)."""
        lo = max(start_us, to_us(self.created_at))
        hi = end_us if self.deactivated_at is None else min(end_us, to_us(self.deactivated_at))
        return lo, hi


def _rng(options: SeedOptions, *parts: object) -> random.Random:
    return random.Random("/".join(map(str, (options.seed, *parts))))


def _whole_seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _uniform_time(rng: random.Random, lo: datetime, hi: datetime) -> datetime:
    return _whole_seconds(lo + (hi - lo) * rng.random())


def paid_organization_ids(options: SeedOptions) -> frozenset[int]:
    """Exactly round(paid_fraction * organizations) paid organizations, chosen by the seed."""
    count = round(options.paid_fraction * options.organizations)
    ids = range(1, options.organizations + 1)
    return frozenset(_rng(options, "paid").sample(ids, count))


def organizations(options: SeedOptions) -> Iterator[Organization]:
    """Organizations 1..N, all created 30 days to 2 years before the seeded range."""
    paid = paid_organization_ids(options)
    for org_id in range(1, options.organizations + 1):
        rng = _rng(options, "organization", org_id)
        name = f"{rng.choice(_NAME_FIRST)} {rng.choice(_NAME_SECOND)}"
        age = timedelta(days=rng.uniform(30, 730))
        created_at = _whole_seconds(options.range_start - age)
        yield Organization(org_id, name, created_at, org_id in paid)


def subscriptions(options: SeedOptions, orgs: Iterator[Organization]) -> Iterator[Subscription]:
    """One subscription row per paid organization, ids 1..P in organization order.

    The rows are what an application writes before checkout: the organization and the day its
    subscription starts, no Stripe ids, `incomplete`. Stripe holds the subscription itself:
    `billing-pipeline stripe demo-subscriptions` creates it there, backdated to `started_at`, and
    the webhook flow links this row and fills its status, customer and period from Stripe's
    events. The start lies within two weeks of the organization's creation, so before the
    seeded range: every seeded day of a paying organization is billable.
    """
    subscription_id = 0
    for org in orgs:
        if not org.paid:
            continue
        subscription_id += 1
        rng = _rng(options, "subscription", org.id)
        started_at = _whole_seconds(org.created_at + timedelta(days=rng.uniform(0, 14)))
        yield Subscription(subscription_id, org.id, started_at)


def _lifetime(
    rng: random.Random, options: SeedOptions, org: Organization
) -> tuple[datetime, datetime | None]:
    """When a sensor was created and deactivated: mostly the whole range, sometimes not."""
    start, end = options.range_start, options.range_end
    draw = rng.random()
    if draw < RETIRED_BEFORE_RANGE_SHARE:
        created_at = _uniform_time(rng, org.created_at, start - timedelta(days=1))
        return created_at, _uniform_time(rng, created_at + timedelta(seconds=1), start)
    if draw < RETIRED_BEFORE_RANGE_SHARE + CREATED_MID_RANGE_SHARE:
        created_at = _uniform_time(rng, start, end)
    else:
        created_at = _uniform_time(rng, org.created_at, start)
    if rng.random() < DEACTIVATED_MID_RANGE_SHARE:
        earliest = max(created_at, start) + timedelta(seconds=1)
        return created_at, _uniform_time(rng, earliest, end)
    return created_at, None


def sensors(options: SeedOptions, orgs: Iterator[Organization]) -> Iterator[Sensor]:
    """`sensors_per_org` sensors per organization, ids (org_id - 1) * per_org + 1.. per_org.

    Two thirds are cold-chain sensors (fridges holding 2-8 °C), the rest room sensors.
    """
    per_org = options.sensors_per_org
    for org in orgs:
        for number in range(1, per_org + 1):
            sensor_id = (org.id - 1) * per_org + number
            rng = _rng(options, "sensor", sensor_id)
            created_at, deactivated_at = _lifetime(rng, options, org)
            if rng.random() < 2 / 3:
                kind, baseline, amplitude = "cold_chain", rng.uniform(3.5, 5.5), 0.4
            else:
                kind, baseline, amplitude = "room", rng.uniform(19.0, 22.5), 1.5
            yield Sensor(
                id=sensor_id,
                organization_id=org.id,
                serial_number=f"DEMO{options.seed}-{org.id:05d}-{number:03d}",
                kind=kind,
                created_at=created_at,
                deactivated_at=deactivated_at,
                baseline=baseline,
                amplitude=amplitude,
                peak_hour=rng.uniform(12.0, 17.0),
            )


def sensor_day_readings(options: SeedOptions, sensor: Sensor, day_index: int) -> list[ReadingRow]:
    """One sensor's readings on seeded day `day_index` (0-based), in recorded order.

    The day is cut into `readings_per_sensor_per_day` equal slots; each slot holds one reading
    at a random moment inside it (irregular intervals, never a fixed grid), unless the
    transmission drops out or the sensor is not active at that moment.
    """
    day_start = to_us(options.range_start) + day_index * DAY_US
    lo, hi = sensor.active_us(day_start, day_start + DAY_US)
    if lo >= hi:
        return []
    rng = _rng(options, "readings", sensor.id, day_index)
    rand, gauss = rng.random, rng.gauss
    slots = options.readings_per_sensor_per_day
    slot_us = DAY_US / slots
    excursion_start, excursion_end, excursion_delta = _excursion(rng, sensor, day_start)
    late_fraction = options.late_fraction
    late_limit = to_us(options.range_end) - DAY_US
    lag_lo, lag_span = INGEST_LAG_US[0], INGEST_LAG_US[1] - INGEST_LAG_US[0]
    baseline, amplitude, sensor_id = sensor.baseline, sensor.amplitude, sensor.id
    phase = day_start + int(sensor.peak_hour * 3_600_000_000)
    omega = 2 * math.pi / DAY_US
    noise = 0.15 if sensor.kind == "cold_chain" else 0.3
    rows: list[ReadingRow] = []
    for slot in range(slots):
        recorded = day_start + int((slot + rand()) * slot_us)
        if recorded < lo or recorded >= hi or rand() < DROPOUT:
            continue
        celsius = baseline + amplitude * math.cos(omega * (recorded - phase)) + gauss(0.0, noise)
        if excursion_start <= recorded < excursion_end:
            celsius += excursion_delta
        if rand() < late_fraction and recorded <= late_limit:
            delay_cap = min(LATE_DELAY_US[1], late_limit + DAY_US - recorded)
            ingested = recorded + DAY_US + int(rand() * (delay_cap - DAY_US))
        else:
            ingested = recorded + lag_lo + int(rand() * lag_span)
        rows.append((sensor_id, recorded, round(celsius, 2), ingested))
    return rows


def _excursion(rng: random.Random, sensor: Sensor, day_start: int) -> tuple[int, int, float]:
    """A warm spell (door left open) on some cold-chain sensor-days, else an empty window."""
    if sensor.kind != "cold_chain" or rng.random() >= EXCURSION_CHANCE:
        return 0, 0, 0.0
    start = day_start + int(rng.random() * DAY_US)
    return start, start + int(rng.uniform(30, 90) * 60 * SECOND_US), rng.uniform(3.0, 6.0)


def reading_batches(options: SeedOptions, all_sensors: list[Sensor]) -> Iterator[list[ReadingRow]]:
    """All readings, one batch per active sensor-day, day by day (the order an app appends)."""
    for day_index in range(options.days):
        for sensor in all_sensors:
            if rows := sensor_day_readings(options, sensor, day_index):
                yield rows


def expected_readings(options: SeedOptions, all_sensors: list[Sensor]) -> int:
    """The expected number of readings: active sensor-days x per-day count x (1 - dropout).

    Used as the progress bar's total and as the reference for the documented tolerance.
    """
    start, end = to_us(options.range_start), to_us(options.range_end)
    active_us = 0
    for sensor in all_sensors:
        lo, hi = sensor.active_us(start, end)
        active_us += max(0, hi - lo)
    per_us = options.readings_per_sensor_per_day / DAY_US
    return round(active_us * per_us * (1 - DROPOUT))
