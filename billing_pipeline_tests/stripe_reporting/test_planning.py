"""Planning against a real Postgres: revisions per customer and day, identifiers, timestamps.

The daily usage is written straight into `billing.daily_usage`, so each test states exactly the
targets the ledger must converge to; nothing is sent to Stripe here.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise, product

from sqlalchemy import Engine, text

from billing_pipeline.stripe_reporting.attribution import (
    SHORT_PART,
    attribution_params,
    organization_parts_sql,
)
from billing_pipeline.stripe_reporting.identifiers import (
    MAX_IDENTIFIER_LENGTH,
    event_identifier,
    event_timestamp,
    identifier_sql,
    timestamp_sql,
)
from billing_pipeline.stripe_reporting.ledger import OUTSIDE_WINDOW, LedgerRow
from billing_pipeline.stripe_reporting.planning import MeterTarget, plan_window
from billing_pipeline.usage.meters import ACTIVE_SENSORS, TEMPERATURE_READINGS, Meter
from billing_pipeline_tests.support.builders import add_organization, add_sensor, midnight
from billing_pipeline_tests.support.reporting import add_billing_period, subscribe

NOW = datetime.now(UTC)
D1, D2 = NOW.date() - timedelta(days=4), NOW.date() - timedelta(days=3)
END = NOW.date()
RAW_SUM = MeterTarget(TEMPERATURE_READINGS, None)
DAILY_SUM = MeterTarget(TEMPERATURE_READINGS, "day")


def set_usage(engine: Engine, meter: Meter, day: date, organization_id: int, value: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO billing.daily_usage (meter, day, organization_id, value) "
                "VALUES (:meter, :day, :org, :value) ON CONFLICT (meter, day, organization_id) "
                "DO UPDATE SET value = excluded.value, computed_at = now()"
            ),
            {"meter": meter.name, "day": day, "org": organization_id, "value": value},
        )


def plan(engine: Engine, target: MeterTarget, now: datetime = NOW) -> list[LedgerRow]:
    return plan_window(engine, target, D1 - timedelta(days=40), END, now=now, keep_rows=True).rows


def summary(rows: list[LedgerRow]) -> list[tuple[str, date, int, int, str]]:
    return [(r.stripe_customer_id, r.day, r.revision, r.value, r.status) for r in rows]


def move(engine: Engine, organization_id: int, customer: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE subscriptions SET stripe_customer_id = :c WHERE organization_id = :o"),
            {"c": customer, "o": organization_id},
        )


def test_raw_sum_sends_differences_per_customer_and_lowers_a_move_without_a_negative_value(
    engine: Engine,
) -> None:
    add_organization(engine, 1, customer="cus_A")
    add_organization(engine, 2)
    subscribe(engine, 2, "cus_A")
    set_usage(engine, TEMPERATURE_READINGS, D1, 1, 10)
    set_usage(engine, TEMPERATURE_READINGS, D1, 2, 5)
    [first] = plan(engine, RAW_SUM)
    assert (first.stripe_customer_id, first.value, first.organization_ids) == ("cus_A", 15, [1, 2])
    assert plan(engine, RAW_SUM) == []  # nothing changed, nothing planned

    move(engine, 2, "cus_B")
    # cus_A's day goes down: its unsent 15 is never sent, the whole 10 replaces it (sent ones
    # would be cancelled first, `cancels.py`); nothing negative.
    assert sorted(summary(plan(engine, RAW_SUM))) == [
        ("cus_A", D1, 2, 10, "pending"),
        ("cus_B", D1, 1, 5, "pending"),
    ]
    with engine.connect() as connection:
        status = connection.execute(
            text("SELECT status FROM billing.meter_ledger WHERE identifier = :i"),
            {"i": first.identifier},
        ).scalar_one()
    assert status == "superseded"


def test_pre_aggregated_rows_carry_the_whole_value_and_supersede_unsent_ones(
    engine: Engine,
) -> None:
    add_organization(engine, 1, customer="cus_A")
    set_usage(engine, TEMPERATURE_READINGS, D1, 1, 10)
    [first] = plan(engine, DAILY_SUM)
    set_usage(engine, TEMPERATURE_READINGS, D1, 1, 12)
    [second] = plan(engine, DAILY_SUM, NOW + timedelta(minutes=5))

    assert (second.revision, second.value, second.aggregation_window) == (2, 12, "day")
    assert second.event_timestamp > first.event_timestamp
    with engine.connect() as connection:
        status = connection.execute(
            text("SELECT status FROM billing.meter_ledger WHERE identifier = :i"),
            {"i": first.identifier},
        ).scalar_one()
    assert status == "superseded"  # never sent after its successor


def test_revisions_are_numbered_past_every_row_whatever_its_status(engine: Engine) -> None:
    # Case 5 at the ledger's level: a rejected newest row never blocks the next revision.
    add_organization(engine, 1, customer="cus_A")
    set_usage(engine, TEMPERATURE_READINGS, D1, 1, 10)
    plan(engine, RAW_SUM)
    with engine.begin() as connection:
        connection.execute(text("UPDATE billing.meter_ledger SET status = 'rejected'"))
    set_usage(engine, TEMPERATURE_READINGS, D1, 1, 11)

    assert summary(plan(engine, RAW_SUM)) == [("cus_A", D1, 2, 11, "pending")]


def test_identifiers_name_the_value_and_stay_within_stripes_limit() -> None:
    name = "temperature_readings"
    same = event_identifier(name, name, "cus_A", midnight(D1), 2, 7)
    other = event_identifier(name, name, "cus_A", midnight(D1), 2, 9)
    part = event_identifier(name, name, "cus_A", midnight(D1) + timedelta(hours=14), 2, 7)
    long = event_identifier("m" * 40, "m" * 40, "cus_" + "x" * 90, midnight(D1), 12345, -7)

    assert same != other  # a restored ledger's revision 2 with another value is another event
    assert same.startswith(f"bp-temperature_readings-cus_A-{D1:%Y%m%d}-r2-")
    assert part.startswith(f"bp-temperature_readings-cus_A-{D1:%Y%m%d}t140000-r2-")
    assert len(long) <= MAX_IDENTIFIER_LENGTH


def test_the_database_computes_the_same_identifiers_and_timestamps_as_python(
    engine: Engine,
) -> None:
    # Planning writes revisions in SQL; re-asserts and every reader build them in Python. Both
    # must agree to the character and the second, or a rerun would send another identifier.
    starts = [midnight(D1), midnight(D1) + timedelta(hours=14, minutes=37, seconds=5)]
    starts.append(starts[1] + timedelta(microseconds=250_000))
    start, end, planned_at, after = (
        f"CAST(:{name} AS timestamptz)" for name in ("start", "end", "planned_at", "after")
    )
    query = text(
        f"""
        SELECT {identifier_sql("CAST(:customer AS text)", start, ":revision", ":value")} AS id,
               {timestamp_sql(start, end, planned_at, after)} AS stamp
        """
    )
    cases = list(
        product(
            [("m", "cus_A"), ("m" * 40, "cus_" + "x" * 90), ("m", "cus_ü")],
            starts,
            [(1, 7), (12345, -7)],
            [-1, 0.01, 1, 24 * 39, 24 * 50],  # planned this many hours after the part's end
            [None, timedelta(seconds=5)],  # the previous revision's stamp, before the part's end
        )
    )
    part_end = midnight(D2)
    with engine.connect() as connection:
        for (meter, customer), part_start, (revision, value), hours, gap in cases:
            planned = part_end + timedelta(hours=hours)
            previous = None if gap is None else part_end - gap
            row = connection.execute(
                query,
                {
                    "meter": meter,
                    "event_name": meter,
                    "customer": customer,
                    "start": part_start,
                    "end": part_end,
                    "revision": revision,
                    "value": value,
                    "planned_at": planned,
                    "after": previous,
                },
            ).one()
            assert row.id == event_identifier(meter, meter, customer, part_start, revision, value)
            assert row.stamp == event_timestamp(part_start, part_end, planned, previous)


def test_timestamps_stay_inside_the_day_and_grow_with_planning_time() -> None:
    day = (midnight(D1), midnight(D2))
    stamps = [event_timestamp(*day, midnight(D2) + timedelta(hours=h)) for h in (0, 1, 24, 900)]

    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(midnight(D1) < s < midnight(D2) for s in stamps)
    assert event_timestamp(*day, NOW, after=midnight(D2) - timedelta(seconds=5)) > stamps[-1]


def test_a_part_of_a_day_is_stamped_inside_itself() -> None:
    closing = (midnight(D1), midnight(D1) + timedelta(hours=14, minutes=37))
    stamps = [
        event_timestamp(*closing, closing[1] + timedelta(minutes=m)) for m in (1, 20, 60 * 24 * 30)
    ]

    assert all(closing[0] <= s < closing[1] for s in stamps) and stamps == sorted(stamps)


def test_a_day_outside_stripes_window_is_recorded_expired_with_the_reason(engine: Engine) -> None:
    add_organization(engine, 1, customer="cus_A")
    old = NOW.date() - timedelta(days=40)
    set_usage(engine, TEMPERATURE_READINGS, old, 1, 3)

    [row] = plan(engine, RAW_SUM)

    assert (row.day, row.status, row.status_reason) == (old, "expired", OUTSIDE_WINDOW)


def test_two_plans_of_one_window_at_once_write_one_revision(engine: Engine) -> None:
    add_organization(engine, 1, customer="cus_A")
    set_usage(engine, ACTIVE_SENSORS, D1, 1, 4)
    barrier = threading.Barrier(2)

    def run() -> list[LedgerRow]:
        barrier.wait()
        return plan(engine, MeterTarget(ACTIVE_SENSORS, None))

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run(), range(2)))

    assert sorted(len(r) for r in results) == [0, 1]


def test_each_part_of_an_hourly_day_is_stamped_in_an_hour_window_of_its_own(
    engine: Engine,
) -> None:
    # Issue 20, item 6: from the day's last part backwards, each part takes the latest hour
    # window it overlaps that is still free; one with none left is listed, never billed.
    add_organization(engine, 1, customer="cus_A")
    add_sensor(engine, 11, 1, midnight(D1) - timedelta(days=3))
    set_usage(engine, ACTIVE_SENSORS, D1, 1, 1)
    cuts = [timedelta(hours=h, minutes=m) for h, m in ((10, 10), (10, 40), (11, 0), (23, 20))]
    instants = [midnight(D1) - timedelta(days=30), *(midnight(D1) + c for c in cuts)]
    for start, end in pairwise([*instants, midnight(D2) + timedelta(days=30)]):
        add_billing_period(engine, "sub_cus_A", "cus_A", start, end)

    rows = plan(engine, MeterTarget(ACTIVE_SENSORS, "hour"))

    windows = {
        row.part_start.astimezone(UTC): row.event_timestamp.replace(minute=0, second=0)
        for row in rows
    }
    hour = [midnight(D1) + timedelta(hours=h) for h in range(24)]
    starts = [midnight(D1), *(midnight(D1) + c for c in cuts)]
    assert windows == {
        starts[0]: hour[9],
        starts[2]: hour[10],
        starts[3]: hour[22],
        starts[4]: hour[23],
    }
    assert all(row.part_start <= row.event_timestamp < row.part_end for row in rows)
    with engine.connect() as connection:
        [unbilled] = connection.execute(
            text(
                f"SELECT * FROM ({organization_parts_sql(ACTIVE_SENSORS)}) AS o "
                "WHERE customer IS NULL"
            ),
            attribution_params(ACTIVE_SENSORS, "hour", D1, D2),
        ).all()
    assert (unbilled.part_start, unbilled.part_end, unbilled.reason) == (
        starts[1],
        starts[2],
        SHORT_PART,
    )
