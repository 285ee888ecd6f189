"""End to end on a real Dagster instance, real Postgres and the Stripe emulator over HTTP."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from sqlalchemy import Engine, text

from billing_pipeline.definitions import defs
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.usage.assets import build_usage_assets
from billing_pipeline.usage.meters import METERS
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import (
    Billing,
    emulator_stripe,
    materialize_day,
    pipeline_resources,
)
from billing_pipeline_tests.support.stripe import new_customer

TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in (4, 3, 2)]


@pytest.fixture
def customers(stripe_billing: StripeBilling) -> tuple[str, str]:
    return new_customer(stripe_billing, "Alpha"), new_customer(stripe_billing, "Beta")


@pytest.fixture
def three_organizations(
    engine: Engine, customers: tuple[str, str]
) -> dict[tuple[str, str, date], int]:
    """Two paying organizations and a free one; returns the expected (meter, customer, day) values.

    The expectations are written out by hand from the rows below, independently of the SQL.
    """
    alpha, beta = customers
    add_organization(engine, 1, customer=alpha)
    add_organization(engine, 2, customer=beta)
    add_organization(engine, 3)  # free tier
    d0, d1, d2 = DAYS
    add_sensor(engine, 11, 1, midnight(d0) - timedelta(days=10))
    add_sensor(engine, 12, 1, midnight(d0) - timedelta(days=10), midnight(d1) + timedelta(hours=5))
    add_sensor(engine, 21, 2, midnight(d1) + timedelta(hours=8))  # joins on d1
    add_sensor(engine, 31, 3, midnight(d0) - timedelta(days=1))
    for day, counts in zip(DAYS, [(10, 7, 0, 3), (12, 2, 5, 3), (9, 0, 6, 3)], strict=True):
        for sensor, count in zip((11, 12, 21, 31), counts, strict=True):
            if count:
                add_readings(engine, sensor, day, count)
    return {
        ("active_sensors", alpha, d0): 2,
        ("active_sensors", alpha, d1): 1,
        ("active_sensors", alpha, d2): 1,
        ("active_sensors", beta, d1): 1,
        ("active_sensors", beta, d2): 1,
        ("temperature_readings", alpha, d0): 17,
        ("temperature_readings", alpha, d1): 14,
        ("temperature_readings", alpha, d2): 9,
        ("temperature_readings", beta, d1): 5,
        ("temperature_readings", beta, d2): 6,
    }


def stripe_totals(
    stripe_billing: StripeBilling, customers: list[str]
) -> dict[tuple[str, str, date], float]:
    """Stripe's own view: meter event summaries per customer and UTC day."""
    meters = {m.event_name: m for m in stripe_billing.list_meters()}
    totals = {}
    for meter in METERS:
        remote = meters[meter.event_name]
        for customer in customers:
            for day in DAYS:
                value = stripe_billing.event_summary_total(
                    remote.id, customer, midnight(day), midnight(day + timedelta(days=1))
                )
                if value:
                    totals[(meter.name, customer, day)] = value
    return totals


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_summaries_equal_source_aggregates_and_reruns_send_nothing(
    api: str,
    billing: Billing,
    customers: tuple[str, str],
    three_organizations: dict[tuple[str, str, date], int],
) -> None:
    stripe = billing.stripe(meter_event_api=api)
    first_pass = [billing.materialize_day(day, stripe=stripe) for day in DAYS]
    assert all(result.success for result in first_pass)
    assert stripe_totals(billing.stripe_billing, list(customers)) == three_organizations
    first_day = first_pass[0].asset_materializations_for_node("stripe__meter_events")[0].metadata
    assert (first_day["ledger_total/temperature_readings"].value, first_day["sent"].value) == (
        17,
        2,
    )
    assert first_day["source_total/temperature_readings"].value == 17
    assert first_day["ledger_total/active_sensors"].value == 2
    events_after_first_pass = len(billing.emulator.meter_events())
    assert events_after_first_pass == len(three_organizations)

    for day in DAYS:
        result = billing.materialize_day(day, stripe=stripe)
        assert result.success
        metadata = result.asset_materializations_for_node("stripe__meter_events")[0].metadata
        assert metadata["planned"].value == 0
        assert metadata["sent"].value == 0
    assert len(billing.emulator.meter_events()) == events_after_first_pass

    with billing.engine.connect() as connection:
        free = connection.execute(
            text("SELECT count(*) FROM billing.meter_ledger WHERE 3 = ANY(organization_ids)")
        ).scalar_one()
    assert free == 0  # the free organization: listed by the unbilled_usage check, never sent


def test_faults_and_a_crash_still_bill_exactly_once(
    billing: Billing,
    customers: tuple[str, str],
    three_organizations: dict[tuple[str, str, date], int],
) -> None:
    # A crash after Stripe accepted an event but before the ledger said so: the row is pending
    # and Stripe already holds its identifier.
    from billing_pipeline.stripe_reporting.ledger import unsent_rows
    from billing_pipeline.stripe_reporting.meter_sync import verify_meters
    from billing_pipeline.stripe_reporting.planning import MeterTarget, plan_window

    crash_day = DAYS[0]
    assert billing.materialize_day(crash_day, build_usage_assets()).success
    remote = verify_meters(billing.stripe_billing, METERS)
    for meter in METERS:
        target = MeterTarget(meter, remote[meter.name].event_time_window)
        plan_window(billing.engine, target, crash_day, crash_day + timedelta(days=1))
    row = unsent_rows(
        billing.engine, [m.name for m in METERS], crash_day, crash_day + timedelta(days=1)
    )[0]
    billing.stripe_billing.send_meter_event(
        event_name=row.event_name,
        customer=row.stripe_customer_id,
        value=row.value,
        identifier=row.identifier,
        timestamp=row.event_timestamp,
    )

    billing.emulator.set_faults(error_500_rate=0.3, error_429_rate=0.1, drop_rate=0.05, seed=7)
    for day in DAYS:
        assert billing.materialize_day(day).success
    billing.emulator.set_faults()

    assert stripe_totals(billing.stripe_billing, list(customers)) == three_organizations
    identifiers = Counter(event["identifier"] for event in billing.emulator.meter_events())
    assert max(identifiers.values()) == 1
    with billing.engine.connect() as connection:
        statuses = {
            row.status: row.n
            for row in connection.execute(
                text("SELECT status, count(*) AS n FROM billing.meter_ledger GROUP BY status")
            )
        }
    assert statuses == {"sent": len(three_organizations)}


def _materialize_in_own_process(
    instance_ref: InstanceRef, database_url: str, api_base: str, day: date
) -> bool:
    resources = pipeline_resources(database_url, emulator_stripe(api_base))
    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        return materialize_day(instance, resources, day).success


def test_two_runs_of_one_partition_at_once_send_each_event_once(
    billing: Billing,
    three_organizations: dict[tuple[str, str, date], int],
) -> None:
    # Two processes, as Dagster would run two launched runs; latency widens the overlap.
    billing.emulator.set_faults(latency_ms=50)
    day = DAYS[1]
    instance_ref = billing.instance.get_ref()
    with ProcessPoolExecutor(
        max_workers=2, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        runs = [
            pool.submit(
                _materialize_in_own_process,
                instance_ref,
                billing.database_url,
                billing.api_base,
                day,
            )
            for _ in range(2)
        ]
        assert all(run.result(timeout=120) for run in runs)
    billing.emulator.set_faults()

    expected_for_day = {k: v for k, v in three_organizations.items() if k[2] == day}
    accepted = billing.emulator.meter_events()
    assert len(accepted) == len(expected_for_day)
    assert len({event["identifier"] for event in accepted}) == len(accepted)


def test_rejected_event_fails_the_run_names_the_row_and_only_it_is_retried(
    billing: Billing,
) -> None:
    known = new_customer(billing.stripe_billing, "Known")
    add_organization(billing.engine, 1, customer=known)
    add_organization(billing.engine, 2, customer="cus_unknown")
    day = DAYS[2]
    add_sensor(billing.engine, 1, 1, midnight(day) - timedelta(days=1))
    add_sensor(billing.engine, 2, 2, midnight(day) - timedelta(days=1))
    add_readings(billing.engine, 1, day, 4)
    add_readings(billing.engine, 2, day, 6)
    billing.emulator.set_unknown_customer_mode("reject")

    result = billing.materialize_day(day)

    # The run fails and says which rows; the known customer's events went through regardless.
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data)
    assert "bp-active_sensors-cus_unknown-" in message
    assert "bp-temperature_readings-cus_unknown-" in message
    assert {e["customer"] for e in billing.emulator.meter_events()} == {known}
    with billing.engine.connect() as connection:
        failed = connection.execute(
            text(
                "SELECT identifier, status_reason FROM billing.meter_ledger "
                "WHERE status = 'failed' ORDER BY identifier"
            )
        ).all()
    assert [row.identifier.split("-")[2] for row in failed] == ["cus_unknown", "cus_unknown"]
    assert all("Stripe rejected the event" in row.status_reason for row in failed)

    # Stripe now takes such events (reporting unknown customers later, asynchronously): the
    # next run sends the two failed rows and nothing else.
    billing.emulator.set_unknown_customer_mode("async")
    sent_before = len(billing.emulator.meter_events())
    assert billing.materialize_day(day).success
    assert len(billing.emulator.meter_events()) == sent_before
    assert sorted(r["identifier"] for r in billing.emulator.error_reports()) == [
        r.identifier for r in failed
    ]
    with billing.engine.connect() as connection:
        statuses = connection.execute(
            text("SELECT DISTINCT status FROM billing.meter_ledger")
        ).scalars()
        assert set(statuses) == {"sent"}


def test_a_day_outside_stripes_window_is_marked_expired_not_clamped(
    billing: Billing,
) -> None:
    old_day = TODAY - timedelta(days=40)
    add_organization(billing.engine, 1, customer="cus_old")
    add_sensor(billing.engine, 1, 1, midnight(old_day) - timedelta(days=1))
    add_readings(billing.engine, 1, old_day, 3)

    result = billing.materialize_day(old_day)

    assert result.success
    metadata = result.asset_materializations_for_node("stripe__meter_events")[0].metadata
    assert metadata["expired"].value == 2
    assert billing.emulator.meter_events() == []
    with billing.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT status, status_reason FROM billing.meter_ledger")
        ).all()
    assert {row.status for row in rows} == {"expired"}
    assert all("35-day window" in row.status_reason for row in rows)


def test_without_a_secret_key_nothing_is_planned_and_a_run_with_a_key_bills_the_day(
    billing: Billing,
    three_organizations: dict[tuple[str, str, date], int],
) -> None:
    day = DAYS[0]
    result = billing.materialize_day(day, stripe=StripeResource())

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "STRIPE_SECRET_KEY is not set" in str(failure.event_specific_data)
    # What a revision carries depends on the Stripe meter's kind: nothing is planned blind.
    with billing.engine.connect() as connection:
        rows = connection.execute(text("SELECT count(*) FROM billing.meter_ledger")).scalar_one()
    assert rows == 0
    assert billing.emulator.meter_events() == []
    # The resource's description, as the UI's Resources page shows it, says the same thing.
    resource = defs.get_repository_def().get_top_level_resources()["stripe"]
    shown = " ".join((resource.description or "").split())
    assert "fails before planning, with nothing written to the ledger and nothing sent" in shown
    assert "pending" not in shown

    assert billing.materialize_day(day).success
    assert len(billing.emulator.meter_events()) == 2


def test_refuses_to_report_to_a_meter_with_the_wrong_aggregation(
    billing: Billing,
    three_organizations: dict[tuple[str, str, date], int],
) -> None:
    billing.emulator.reset()  # no meters at all
    client = billing.stripe_billing.client
    client.v1.billing.meters.create(
        {
            "display_name": "Readings (wrong)",
            "event_name": "temperature_readings",
            "default_aggregation": {"formula": "count"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )

    result = billing.materialize_day(DAYS[0])

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text_of_failure = str(failure.event_specific_data)
    assert "'count'" in text_of_failure and "active_sensors" in text_of_failure
    assert billing.emulator.meter_events() == []


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_concurrency_beyond_the_connection_pool_bills_exactly(
    api: str,
    billing: Billing,
    customers: tuple[str, str],
    three_organizations: dict[tuple[str, str, date], int],
) -> None:
    # Rows are claimed by lease and no connection is held across a Stripe call, so 50 calls in
    # flight over a pool of 2 (+2 overflow) connections neither wait for one nor time out.
    resources = {
        "postgres": PostgresResource(database_url=billing.database_url, pool_size=2),
        "stripe": billing.stripe(concurrency=50, meter_event_api=api),
    }
    assert all(materialize_day(billing.instance, resources, day).success for day in DAYS)
    assert stripe_totals(billing.stripe_billing, list(customers)) == three_organizations
    assert len(billing.emulator.meter_events()) == len(three_organizations)
