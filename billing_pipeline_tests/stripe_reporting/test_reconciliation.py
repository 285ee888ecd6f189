"""Reconciliation with Stripe on a real Dagster instance, real Postgres and the emulator.

The billing run is reconciled right after it sends; then Stripe's totals are tampered with
directly through the SDK (as another integration, a manual dashboard entry or a lost event
would) and the reconciliation job, launched for a range of days, must name the drift.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.reconciliation import ledger_views
from billing_pipeline.stripe_reporting.reconciliation_check import build_reconciliation_check
from billing_pipeline.stripe_reporting.schedules import reconciliation_schedule
from billing_pipeline.usage.meters import METERS
from billing_pipeline_tests.support.builders import (
    add_ledger_row,
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import BILLING_ASSETS, Billing
from billing_pipeline_tests.support.reporting import reconcile_days, subscribe
from billing_pipeline_tests.support.stripe import new_customer

TODAY = datetime.now(UTC).date()
D1, D2 = TODAY - timedelta(days=3), TODAY - timedelta(days=2)
SETTLED = build_reconciliation_check(settle_window=timedelta(0))


@pytest.fixture
def billed(billing: Billing) -> tuple[str, str]:
    """Two paying organizations billed for D1 and D2, each run reconciled as it finishes."""
    engine = billing.engine
    alpha = new_customer(billing.stripe_billing, "Alpha")
    beta = new_customer(billing.stripe_billing, "Beta")
    add_organization(engine, 1, customer=alpha)
    add_organization(engine, 2, customer=beta)
    add_sensor(engine, 11, 1, midnight(D1) - timedelta(days=1))
    add_sensor(engine, 21, 2, midnight(D1) - timedelta(days=1))
    for day in (D1, D2):
        add_readings(engine, 11, day, 4)
        add_readings(engine, 21, day, 2)
        result = billing.materialize_day(day, [*BILLING_ASSETS, SETTLED])
        [evaluation] = result.get_asset_check_evaluations()
        assert evaluation.passed, evaluation.metadata
        assert evaluation.metadata["compared"].value == 4  # 2 meters x 2 customers
    return alpha, beta


def reconcile_range(
    billing: Billing,
    first: date,
    last: date,
    check: dg.AssetChecksDefinition = SETTLED,
) -> dict[date, dg.AssetCheckEvaluation]:
    """Launch the check alone over a partition range, as the schedule and a backfill do."""
    return reconcile_days(
        billing.instance, billing.database_url, billing.api_base, first, last, check
    )


def send_directly(
    stripe_billing: StripeBilling, event_name: str, customer: str, value: int, at: datetime
) -> None:
    stripe_billing.client.v1.billing.meter_events.create(
        {
            "event_name": event_name,
            "timestamp": int(at.timestamp()),
            "payload": {"stripe_customer_id": customer, "value": str(value)},
        }
    )


def test_tampered_totals_are_reported_as_drift_with_the_customers_involved(
    billing: Billing,
    billed: tuple[str, str],
) -> None:
    alpha, beta = billed
    # An extra counter event for Alpha on D1 (in the hour window the pipeline's own event of the
    # day sits in), and a later gauge reading for Beta on D2.
    send_directly(
        billing.stripe_billing,
        "temperature_readings",
        alpha,
        3,
        midnight(D1) + timedelta(hours=23, minutes=30),
    )
    late_in_d2 = midnight(D2) + timedelta(hours=23, minutes=59)
    send_directly(billing.stripe_billing, "active_sensors", beta, 9, late_in_d2)

    evaluations = reconcile_range(billing, D1, D2)

    # The ledger is untouched; each day's result names its drifting (meter, day, customer,
    # organization) with the source's value, the ledger's and Stripe's (pre-aggregated meters,
    # as sync-meters creates them: the newer event replaced the day's value).
    assert set(evaluations) == {D1, D2}
    for day, drift in (
        (D1, f"| temperature_readings | {D1} | {alpha} | 1 | 4 | 4 | 3.0 |"),
        (D2, f"| active_sensors | {D2} | {beta} | 2 | 1 | 1 | 9.0 |"),
    ):
        evaluation = evaluations[day]
        assert not evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR
        metadata = evaluation.metadata
        assert metadata["compared"].value == 4  # 2 meters x 2 customers
        assert metadata["drifts"].value == 1
        assert metadata["customers_with_drift"].value == 1
        assert drift in str(metadata["drift_details"].value)


def test_a_customer_paying_for_two_organizations_reconciles_to_their_sum(
    billing: Billing,
) -> None:
    engine = billing.engine
    alpha = new_customer(billing.stripe_billing, "Alpha")
    add_organization(engine, 1, customer=alpha)
    add_organization(engine, 2)
    subscribe(engine, 2, alpha)
    add_sensor(engine, 11, 1, midnight(D1) - timedelta(days=1))
    add_sensor(engine, 21, 2, midnight(D1) - timedelta(days=1))
    add_readings(engine, 11, D1, 4)
    add_readings(engine, 21, D1, 2)
    with engine.connect() as connection:
        readings = connection.execute(
            text("SELECT count(*) FROM temperature_readings WHERE recorded_at >= :d1"),
            {"d1": midnight(D1)},
        ).scalar_one()

    result = billing.materialize_day(D1, [*BILLING_ASSETS, SETTLED])

    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.metadata  # each organization's usage counted once
    assert evaluation.metadata["compared"].value == 2  # 2 meters x 1 customer
    metadata = result.asset_materializations_for_node("stripe__meter_events")[0].metadata
    assert metadata["source_total/temperature_readings"].value == readings == 6
    assert metadata["source_total/active_sensors"].value == 2
    [meter] = [
        m for m in billing.stripe_billing.list_meters() if m.event_name == "temperature_readings"
    ]
    totals = billing.stripe_billing.daily_totals(meter.id, alpha, midnight(D1), midnight(D2))
    assert totals == {D1: readings}


def test_stripe_usage_on_a_day_the_ledger_never_billed_is_drift(
    billing: Billing,
    billed: tuple[str, str],
) -> None:
    alpha, _ = billed
    day_before = D1 - timedelta(days=1)
    send_directly(billing.stripe_billing, "temperature_readings", alpha, 5, midnight(day_before))

    evaluations = reconcile_range(billing, day_before, D2)

    assert {day: e.passed for day, e in evaluations.items()} == {
        day_before: False,
        D1: True,
        D2: True,
    }
    evaluation = evaluations[day_before]
    details = str(evaluation.metadata["drift_details"].value)
    assert f"| temperature_readings | {day_before} | {alpha} |" in details
    assert "| 0 | 0 | 5.0 |" in details


def test_fresh_differences_count_as_settling_not_drift(
    billing: Billing,
    billed: tuple[str, str],
) -> None:
    alpha, _ = billed
    send_directly(billing.stripe_billing, "temperature_readings", alpha, 3, midnight(D2))
    default_window = build_reconciliation_check()

    evaluation = reconcile_range(billing, D1, D2, default_window)[D2]

    # The rows were sent seconds ago, so Stripe may simply not have caught up yet.
    assert evaluation.passed
    assert evaluation.metadata["settling"].value == 1
    assert evaluation.metadata["drifts"].value == 0


def test_the_ledgers_view_follows_each_meters_kind(engine: Engine) -> None:
    old = timedelta(hours=2)
    # raw sum: differences add up; the failed revision is not in Stripe yet (settling).
    add_ledger_row(engine, 1, "sent", revision=1, value=10, target=10, age=old)
    add_ledger_row(engine, 1, "sent", revision=2, value=-3, target=7, age=old)
    add_ledger_row(engine, 1, "failed", revision=3, value=2, target=9, age=old)
    # last: the newest *sent* revision's value, not a newer pending one.
    for revision, status, target in ((1, "sent", 4), (2, "sent", 6), (3, "pending", 8)):
        add_ledger_row(
            engine, 1, status, meter="active_sensors", revision=revision, value=target, age=old
        )
    add_ledger_row(engine, 2, "sent", customer="cus_B", value=5, age=old)

    views = ledger_views(
        engine, METERS, {}, D1 - timedelta(days=7), TODAY, datetime.now(UTC) - timedelta(minutes=30)
    )

    assert {(m, c, v.held, v.settling) for (m, c, _), v in views.items()} == {
        ("temperature_readings", "cus_A", 7, True),
        ("active_sensors", "cus_A", 6, True),
        ("temperature_readings", "cus_B", 5, False),
    }


def test_the_schedule_reconciles_stripes_35_day_window_once_stripe_has_settled() -> None:
    tick = datetime(2026, 3, 10, 5, tzinfo=UTC)
    context = dg.build_schedule_context(scheduled_execution_time=tick)

    request = reconciliation_schedule(context)

    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "reconcile-2026-03-09"
    # Stripe's 35-day window: every day a pair compared once in 28 days could still drift on.
    assert request.tags["dagster/asset_partition_range_start"] == "2026-02-03"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-03-09"
    assert reconciliation_schedule.cron_schedule == "0 5 * * *"
