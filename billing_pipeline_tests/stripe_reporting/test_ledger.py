"""Ledger planning against a real Postgres: revisions, identifiers, skips, expiry, concurrency.

The daily usage is written straight into `billing.daily_usage`, so each test states exactly the
targets the ledger must converge to; nothing is sent to Stripe here.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, text

from billing_pipeline.stripe_reporting.ledger import (
    NO_CUSTOMER,
    OUTSIDE_WINDOW,
    REASSERT,
    LedgerRow,
    plan_window,
)
from billing_pipeline.usage.meters import ACTIVE_SENSORS, TEMPERATURE_READINGS, Meter
from billing_pipeline_tests.support.builders import add_organization, midnight

NOW = datetime.now(UTC)
D0, D1, D2 = (NOW.date() - timedelta(days=n) for n in (5, 4, 3))
END = D2 + timedelta(days=1)


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


def drop_usage(engine: Engine, meter: Meter, day: date, organization_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "DELETE FROM billing.daily_usage "
                "WHERE meter = :meter AND day = :day AND organization_id = :org"
            ),
            {"meter": meter.name, "day": day, "org": organization_id},
        )


def plan(engine: Engine, meter: Meter, first: date = D0, end: date = END) -> list[LedgerRow]:
    return plan_window(engine, meter, first, end, now=NOW)


def summary(rows: list[LedgerRow]) -> list[tuple[date, int, int, int, str]]:
    return [(r.day, r.organization_id, r.revision, r.value, r.status) for r in rows]


def test_sum_meter_sends_each_change_as_a_difference_under_a_new_identifier(
    engine: Engine,
) -> None:
    add_organization(engine, 1, customer="cus_a")
    set_usage(engine, TEMPERATURE_READINGS, D1, 1, 10)

    [first] = plan(engine, TEMPERATURE_READINGS)
    assert first.identifier == f"bp-temperature_readings-1-{D1:%Y%m%d}-r1"
    assert first.event_timestamp == datetime.combine(D1, datetime.min.time(), UTC) + timedelta(
        hours=23, seconds=1
    )
    assert (first.value, first.target_value, first.status) == (10, 10, "pending")
    assert first.stripe_customer_id == "cus_a"

    set_usage(engine, TEMPERATURE_READINGS, D1, 1, 13)
    set_usage(engine, TEMPERATURE_READINGS, D1, 1, 13)  # same target twice: one correction
    assert summary(plan(engine, TEMPERATURE_READINGS)) == [(D1, 1, 2, 3, "pending")]
    set_usage(engine, TEMPERATURE_READINGS, D1, 1, 8)
    [down] = plan(engine, TEMPERATURE_READINGS)
    assert (down.identifier[-3:], down.value, down.target_value) == ("-r3", -5, 8)
    # The organization's readings all disappear (e.g. deleted as duplicates): Stripe gets -8.
    drop_usage(engine, TEMPERATURE_READINGS, D1, 1)
    assert summary(plan(engine, TEMPERATURE_READINGS)) == [(D1, 1, 4, -8, "pending")]

    assert plan(engine, TEMPERATURE_READINGS) == []  # nothing left to say: idempotent


def test_last_meter_resends_the_value_and_reasserts_the_newest_day_after_an_old_correction(
    engine: Engine,
) -> None:
    add_organization(engine, 1, customer="cus_a")
    for day, value in ((D0, 2), (D1, 3), (D2, 4)):
        set_usage(engine, ACTIVE_SENSORS, day, 1, value)
    assert summary(plan(engine, ACTIVE_SENSORS)) == [
        (D0, 1, 1, 2, "pending"),
        (D1, 1, 1, 3, "pending"),
        (D2, 1, 1, 4, "pending"),
    ]

    # A sensor deactivated retroactively lowers D0. Only D0 is re-planned, yet the newest day's
    # value is resent after it, so the period's `last` stays 4 even if Stripe picks by arrival.
    set_usage(engine, ACTIVE_SENSORS, D0, 1, 1)
    correction, reassert = plan(engine, ACTIVE_SENSORS, D0, D0 + timedelta(days=1))
    assert (correction.day, correction.revision, correction.value) == (D0, 2, 1)
    assert (reassert.day, reassert.revision, reassert.value) == (D2, 2, 4)
    assert reassert.identifier == f"bp-active_sensors-1-{D2:%Y%m%d}-r2"
    assert reassert.status_reason == REASSERT
    assert reassert.event_timestamp > correction.event_timestamp

    # Correcting the newest day itself needs no reassert.
    set_usage(engine, ACTIVE_SENSORS, D2, 1, 5)
    assert summary(plan(engine, ACTIVE_SENSORS)) == [(D2, 1, 3, 5, "pending")]
    assert plan(engine, ACTIVE_SENSORS) == []


def test_free_organization_is_skipped_and_billed_from_its_subscription_start(
    engine: Engine,
) -> None:
    add_organization(engine, 1)  # no subscription yet
    for day in (D0, D1, D2):
        set_usage(engine, TEMPERATURE_READINGS, day, 1, 7)
    skipped = plan(engine, TEMPERATURE_READINGS)
    assert [(r.day, r.status, r.status_reason, r.stripe_customer_id) for r in skipped] == [
        (day, "skipped", NO_CUSTOMER, None) for day in (D0, D1, D2)
    ]
    assert plan(engine, TEMPERATURE_READINGS) == []  # the decision is recorded once

    # The organization subscribes during D1: D1 and D2 are billed in full, D0 stays skipped.
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscriptions (organization_id, stripe_customer_id, status, "
                "started_at) VALUES (1, 'cus_new', 'active', :started)"
            ),
            {"started": midnight(D1) + timedelta(hours=6)},
        )
    billed = plan(engine, TEMPERATURE_READINGS)
    assert summary(billed) == [(D1, 1, 2, 7, "pending"), (D2, 1, 2, 7, "pending")]
    assert {r.stripe_customer_id for r in billed} == {"cus_new"}
    assert plan(engine, TEMPERATURE_READINGS) == []


def test_a_day_outside_stripes_window_is_recorded_expired_with_the_reason(engine: Engine) -> None:
    add_organization(engine, 1, customer="cus_a")
    old = NOW.date() - timedelta(days=36)
    set_usage(engine, TEMPERATURE_READINGS, old, 1, 4)
    set_usage(engine, ACTIVE_SENSORS, old, 1, 1)

    rows = [
        *plan(engine, TEMPERATURE_READINGS, old, old + timedelta(days=1)),
        *plan(engine, ACTIVE_SENSORS, old, old + timedelta(days=1)),
    ]

    # Recorded with its value, never clamped to a later day, and never planned again.
    assert [(r.status, r.status_reason, r.day, r.value) for r in rows] == [
        ("expired", OUTSIDE_WINDOW, old, 4),
        ("expired", OUTSIDE_WINDOW, old, 1),
    ]
    assert plan(engine, TEMPERATURE_READINGS, old, old + timedelta(days=1)) == []


def test_two_plans_of_one_window_at_once_write_one_revision(engine: Engine) -> None:
    add_organization(engine, 1, customer="cus_a")
    add_organization(engine, 2, customer="cus_b")
    for org in (1, 2):
        for day in (D0, D1, D2):
            set_usage(engine, TEMPERATURE_READINGS, day, org, 5 * org)
    start = threading.Barrier(2)

    def plan_together() -> list[LedgerRow]:
        start.wait()
        return plan(engine, TEMPERATURE_READINGS)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [f.result() for f in [pool.submit(plan_together) for _ in range(2)]]

    # The advisory lock serialises them: the second sees the first's rows and adds nothing.
    # Without it both would insert r1 and one would fail on the unique revision.
    assert sorted(len(r) for r in results) == [0, 6]
    with engine.connect() as connection:
        revisions = connection.execute(
            text("SELECT DISTINCT revision FROM billing.meter_ledger")
        ).scalars()
        assert set(revisions) == {1}


def test_a_row_stripe_rejected_later_is_billed_again_under_a_new_identifier(
    engine: Engine,
) -> None:
    add_organization(engine, 1, customer="cus_a")
    set_usage(engine, TEMPERATURE_READINGS, D1, 1, 10)
    set_usage(engine, ACTIVE_SENSORS, D1, 1, 4)
    plan(engine, TEMPERATURE_READINGS)
    plan(engine, ACTIVE_SENSORS)
    with engine.begin() as connection:
        # Both were accepted, then named in a meter error report: their identifiers are spent.
        connection.execute(text("UPDATE billing.meter_ledger SET status = 'rejected'"))

    assert summary(plan(engine, TEMPERATURE_READINGS)) == [(D1, 1, 2, 10, "pending")]
    assert summary(plan(engine, ACTIVE_SENSORS)) == [(D1, 1, 2, 4, "pending")]
    assert plan(engine, TEMPERATURE_READINGS) == plan(engine, ACTIVE_SENSORS) == []
