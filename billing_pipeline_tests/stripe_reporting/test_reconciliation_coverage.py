"""Reconciliation covers every customer within a week while asking Stripe only about a share.

Through the real check on a real Dagster instance, Postgres and the emulator: customers billed
today are checked by every run (activity); once their ledger is quiet, each is checked on one day
out of seven, so a drift nobody on our side caused (another integration sending events for the
customer) is still found within a week, and the metadata says who was covered and why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

from billing_pipeline.stripe_reporting.reconciliation_check import build_reconciliation_check
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import BILLING_ASSETS, Billing
from billing_pipeline_tests.support.reporting import reconcile_days
from billing_pipeline_tests.support.stripe import new_customer

TODAY = datetime.now(UTC).date()
D1 = TODAY - timedelta(days=3)


def bill_two_customers(billing: Billing) -> tuple[str, str]:
    alpha = new_customer(billing.stripe_billing, "Alpha")
    beta = new_customer(billing.stripe_billing, "Beta")
    add_organization(billing.engine, 1, customer=alpha)
    add_organization(billing.engine, 2, customer=beta)
    add_sensor(billing.engine, 11, 1, midnight(D1) - timedelta(days=1))
    add_sensor(billing.engine, 21, 2, midnight(D1) - timedelta(days=1))
    add_readings(billing.engine, 11, D1, 4)
    add_readings(billing.engine, 21, D1, 2)
    assert billing.materialize_day(D1, BILLING_ASSETS).success
    return alpha, beta


def test_customers_billed_recently_are_checked_on_every_run(billing: Billing) -> None:
    bill_two_customers(billing)
    check = build_reconciliation_check(settle_window=timedelta(0))

    evaluation = reconcile_days(
        billing.instance, billing.database_url, billing.api_base, D1, D1, check
    )[D1]

    assert evaluation.passed
    metadata = evaluation.metadata
    assert metadata["customers_checked"].value == 2
    assert metadata["customers_total"].value == 2
    assert metadata["customers_checked_by_reason"].value == {
        "activity": 2,
        "source_changed": 0,
        "rotation": 0,
    }
    assert metadata["compared"].value == 4  # 2 meters x 2 customers
    assert metadata["oldest_check_age_days"].value == 0


def test_a_quiet_customers_drift_is_found_within_seven_days(billing: Billing) -> None:
    alpha, _ = bill_two_customers(billing)
    # Someone else sends an event for Alpha (in the hour window of our own event of the day):
    # nothing changes in our ledger or source.
    billing.stripe_billing.client.v1.billing.meter_events.create(
        {
            "event_name": "temperature_readings",
            "timestamp": int((midnight(D1) + timedelta(hours=23, minutes=30)).timestamp()),
            "payload": {"stripe_customer_id": alpha, "value": "3"},
        }
    )
    started = datetime.now(UTC)

    # Seven consecutive daily runs, starting once the billing run is older than a day.
    evaluations = []
    for offset in range(2, 9):
        check = build_reconciliation_check(
            settle_window=timedelta(0),
            clock=lambda offset=offset: started + timedelta(days=offset),  # type: ignore[misc]
        )
        evaluations.append(
            reconcile_days(billing.instance, billing.database_url, billing.api_base, D1, D1, check)[
                D1
            ]
        )

    # Each customer was asked about on exactly one of the seven days, by rotation.
    coverage = [
        (
            e.metadata["customers_checked"].value,
            e.metadata["customers_total"].value,
            e.metadata["customers_checked_by_reason"].value,
            e.metadata["oldest_check_age_days"].value,
        )
        for e in evaluations
    ]
    assert sum(cast(int, checked) for checked, _, _, _ in coverage) == 2
    for checked, total, reasons, oldest in coverage:
        assert total == 2
        assert reasons == {"activity": 0, "source_changed": 0, "rotation": checked}
        assert oldest in range(7)
    # Alpha's drift is reported on the one day Alpha was checked, and only then (pre-aggregated
    # meters, as sync-meters creates them: the newer event replaced the day's value).
    failed = [e for e in evaluations if not e.passed]
    assert len(failed) == 1
    details = str(failed[0].metadata["drift_details"].value)
    assert f"| temperature_readings | {D1} | {alpha} | 1 | 4 | 4 | 3.0 |" in details
