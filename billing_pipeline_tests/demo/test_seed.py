"""`billing-pipeline seed`: deterministic, realistic demo data, loaded all or nothing."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg2.errors
import pytest
from sqlalchemy import Engine, text

from billing_demo.dev.supervisor import first_data_day
from billing_demo.seed import cli as seed_cli
from billing_demo.seed import generator
from billing_demo.seed.generator import SeedOptions
from billing_demo.seed.loader import SeedRefusedError, seed_database
from billing_pipeline import cli as main_cli

END = date(2026, 11, 20)
SMALL = SeedOptions(
    organizations=12,
    days=3,
    sensors_per_org=4,
    readings_per_sensor_per_day=24,
    end_date=END,
    late_fraction=0.02,
)
# Readings stay within this share of `expected_readings` (dropouts are random per slot).
TOLERANCE = 0.05

FINGERPRINT = text(
    """
    SELECT
      (SELECT md5(string_agg(concat_ws('|', id, name, created_at), ',' ORDER BY id))
         FROM organizations),
      (SELECT md5(string_agg(concat_ws('|', id, organization_id, stripe_customer_id,
                  stripe_subscription_id, status, started_at, current_period_start,
                  current_period_end), ',' ORDER BY id))
         FROM subscriptions),
      (SELECT md5(string_agg(concat_ws('|', id, organization_id, serial_number, created_at,
                  deactivated_at), ',' ORDER BY id))
         FROM sensors),
      (SELECT md5(string_agg(concat_ws('|', sensor_id, recorded_at, celsius, ingested_at), ','
                  ORDER BY sensor_id, recorded_at, ingested_at))
         FROM temperature_readings),
      (SELECT count(*) FROM temperature_readings)
    """
)

SCHEMA_OBJECTS = text(
    """
    SELECT indexdef FROM pg_indexes WHERE tablename = 'temperature_readings'
    UNION ALL
    SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
     WHERE conrelid = 'temperature_readings'::regclass
    ORDER BY 1
    """
)


def _fingerprint(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as connection:
        return tuple(connection.execute(FINGERPRINT).one())


def _scalar(engine: Engine, sql: str, **params: object) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def test_same_options_give_identical_rows(engine: Engine) -> None:
    seed_database(engine, SMALL)
    first = _fingerprint(engine)
    seed_database(engine, SMALL, replace=True)
    assert _fingerprint(engine) == first

    seed_database(engine, SeedOptions(**{**SMALL.__dict__, "seed": 7}), replace=True)
    assert _fingerprint(engine)[3] != first[3]


def test_rows_do_not_depend_on_iteration_order() -> None:
    sensors = list(generator.sensors(SMALL, generator.organizations(SMALL)))
    forward = [generator.sensor_day_readings(SMALL, s, d) for d in range(3) for s in sensors]
    backward = [generator.sensor_day_readings(SMALL, s, d) for d in (2, 1, 0) for s in sensors]
    assert sorted(map(tuple, forward)) == sorted(map(tuple, backward))
    assert list(generator.sensors(SMALL, generator.organizations(SMALL))) == sensors


def test_counts_match_requested_sizes(engine: Engine) -> None:
    summary = seed_database(engine, SMALL)
    sensors = list(generator.sensors(SMALL, generator.organizations(SMALL)))
    expected = generator.expected_readings(SMALL, sensors)

    assert _scalar(engine, "SELECT count(*) FROM organizations") == summary.organizations == 12
    assert _scalar(engine, "SELECT count(*) FROM sensors") == summary.sensors == 48
    assert _scalar(engine, "SELECT count(*) FROM temperature_readings") == summary.readings
    assert abs(summary.readings - expected) <= TOLERANCE * expected
    assert 0.75 * SMALL.nominal_readings <= expected <= SMALL.nominal_readings


def test_paid_organizations_have_a_subscription_row_waiting_for_stripe_and_free_ones_none(
    engine: Engine,
) -> None:
    """The seed writes what an application writes before checkout; Stripe's events fill the rest
    (billing_pipeline_tests/demo/test_demo_subscriptions.py)."""
    summary = seed_database(engine, SMALL)
    assert summary.subscriptions == round(0.7 * 12)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT o.id, s.stripe_customer_id, s.stripe_subscription_id, s.status,"
                " s.started_at, s.current_period_start, s.current_period_end"
                " FROM organizations o JOIN subscriptions s ON s.organization_id = o.id"
            )
        ).all()
        subscribed_twice = connection.execute(
            text("SELECT count(*) FROM subscriptions GROUP BY organization_id HAVING count(*) > 1")
        ).all()
    assert len(rows) == summary.subscriptions
    assert subscribed_twice == []
    for _, customer, subscription, status, started, period_start, period_end in rows:
        assert (customer, subscription, status) == (None, None, "incomplete")
        assert started <= SMALL.range_start
        assert (period_start, period_end) == (None, None)


def test_sensor_history_is_sane(engine: Engine) -> None:
    options = SeedOptions(**{**SMALL.__dict__, "organizations": 60, "days": 10})
    seed_database(engine, options)
    start, end = options.range_start, options.range_end
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT s.created_at, s.deactivated_at, o.created_at FROM sensors s"
                " JOIN organizations o ON o.id = s.organization_id"
            )
        ).all()
    for created, deactivated, org_created in rows:
        assert created.utcoffset() == timedelta(0)
        assert org_created <= created
        assert deactivated is None or created < deactivated
    whole_range = [r for r in rows if r[0] < start and (r[1] is None or r[1] >= end)]
    assert len(whole_range) > 0.7 * len(rows)
    assert any(start <= created < end for created, _, _ in rows)
    assert any(d is not None and start < d < end for _, d, _ in rows)


def test_readings_fall_inside_the_range_and_only_while_the_sensor_is_active(
    engine: Engine,
) -> None:
    seed_database(engine, SMALL)
    outside = _scalar(
        engine,
        "SELECT count(*) FROM temperature_readings r JOIN sensors s ON s.id = r.sensor_id"
        " WHERE r.recorded_at < greatest(s.created_at, :start)"
        " OR r.recorded_at >= least(coalesce(s.deactivated_at, 'infinity'), :end)",
        start=SMALL.range_start,
        end=SMALL.range_end,
    )
    assert outside == 0
    low, high = _scalar(
        engine, "SELECT array[min(celsius), max(celsius)] FROM temperature_readings"
    )
    assert -5 < low < high < 35


def test_late_readings_arrive_after_their_day_but_not_after_the_range(engine: Engine) -> None:
    summary = seed_database(engine, SMALL)
    with engine.connect() as connection:
        late = connection.execute(
            text(
                "SELECT recorded_at, ingested_at FROM temperature_readings"
                " WHERE ingested_at - recorded_at >= interval '1 day'"
            )
        ).all()
        slowest_regular = connection.execute(
            text(
                "SELECT max(ingested_at - recorded_at) FROM temperature_readings"
                " WHERE ingested_at - recorded_at < interval '1 day'"
            )
        ).scalar_one()
    assert len(late) == summary.late_readings > 0
    for recorded, ingested in late:
        day_end = datetime.combine(recorded.date() + timedelta(days=1), datetime.min.time(), UTC)
        assert ingested >= day_end
        assert ingested - recorded <= timedelta(days=3)
        assert ingested <= SMALL.range_end
    assert slowest_regular <= timedelta(seconds=5)


def test_refuses_existing_data_unless_replacing(engine: Engine) -> None:
    seed_database(engine, SMALL)
    before = _fingerprint(engine)
    with pytest.raises(SeedRefusedError, match="--replace"):
        seed_database(engine, SeedOptions(**{**SMALL.__dict__, "seed": 1}))
    assert _fingerprint(engine) == before

    fewer = SeedOptions(**{**SMALL.__dict__, "organizations": 3})
    summary = seed_database(engine, fewer, replace=True)
    assert _scalar(engine, "SELECT count(*) FROM organizations") == summary.organizations == 3


def test_schema_is_restored_and_identities_continue_after_the_ids(engine: Engine) -> None:
    with engine.connect() as connection:
        schema_before = connection.execute(SCHEMA_OBJECTS).scalars().all()
    seed_database(engine, SMALL)
    with engine.begin() as connection:
        assert connection.execute(SCHEMA_OBJECTS).scalars().all() == schema_before
        new_id = connection.execute(
            text("INSERT INTO organizations (name) VALUES ('new') RETURNING id")
        ).scalar_one()
    assert new_id == SMALL.organizations + 1


def test_a_failed_load_leaves_everything_as_it_was(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_database(engine, SMALL)
    before = _fingerprint(engine)
    with engine.connect() as connection:
        schema_before = connection.execute(SCHEMA_OBJECTS).scalars().all()

    def failing_batches(*args: object) -> Any:
        yield [(1, generator.to_us(SMALL.range_start), 4.0, generator.to_us(SMALL.range_start))]
        raise RuntimeError("generator broke mid-load")

    monkeypatch.setattr(generator, "reading_batches", failing_batches)
    # psycopg2 reports an exception raised while it reads the COPY data as a cancelled query.
    with pytest.raises(psycopg2.errors.QueryCanceled, match="mid-load"):
        seed_database(engine, SeedOptions(**{**SMALL.__dict__, "seed": 5}), replace=True)
    assert _fingerprint(engine) == before
    with engine.connect() as connection:
        assert connection.execute(SCHEMA_OBJECTS).scalars().all() == schema_before


def _seed_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    seed_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


SEED_ARGV = [
    "seed",
    "--organizations=5",
    "--days=2",
    "--sensors-per-org=2",
    "--readings-per-sensor-per-day=12",
    "--end-date=2026-11-20",
]


def test_cli_seeds_then_refuses_then_replaces(
    engine: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(*extra: str) -> int:
        args = _seed_parser().parse_args([*SEED_ARGV, *extra])
        result: int = args.handler(args)
        return result

    assert run() == 0
    assert "5 organizations (4 paid, 1 free), 10 sensors" in capsys.readouterr().out
    seed_42 = _fingerprint(engine)
    assert run("--seed=3") == 1
    assert "--replace" in capsys.readouterr().err
    assert _fingerprint(engine) == seed_42
    assert run("--seed=3", "--replace") == 0
    assert _fingerprint(engine)[1] != seed_42[1]  # the subscriptions start on other days


def test_cli_rejects_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _seed_parser().parse_args(["seed", "--days=0"])
    assert "at least 1" in capsys.readouterr().err


def test_main_entry_point_runs_seed(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main_cli.main(SEED_ARGV) == 0
    assert _scalar(engine, "SELECT count(*) FROM organizations") == 5


def test_the_demos_partitions_start_on_the_first_seeded_day(
    engine: Engine, database_url: str
) -> None:
    """`billing-pipeline dev` starts Dagster's partitions where the seeded readings start, so
    Lineage counts only days that hold data."""
    assert first_data_day(database_url) is None  # nothing seeded: the default start stays
    seed_database(engine, SMALL, replace=True)
    assert first_data_day(database_url) == SMALL.start_date == END - timedelta(days=2)
