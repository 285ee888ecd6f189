"""What a failed run and a failed check become as alerts: the days, customers and errors they
carry, read from the run's tags and failed steps and from the check's metadata."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from billing_pipeline.alerts.failures import check_failure_alert, fingerprint, run_failure_alert
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.stripe import new_customer

UI = "http://127.0.0.1:3000"


def test_a_billing_run_refused_by_stripe_names_the_day_the_customer_and_the_error(
    billing: Billing,
) -> None:
    day = datetime.now(UTC).date() - timedelta(days=1)
    add_organization(billing.engine, 1, customer=new_customer(billing.stripe_billing, "Org 1"))
    add_organization(billing.engine, 2, customer="cus_gone")
    for organization in (1, 2):
        add_sensor(billing.engine, organization, organization, midnight(day) - timedelta(days=2))
        add_readings(billing.engine, organization, day, 4)
    billing.emulator.set_unknown_customer_mode("reject")  # Stripe's synchronous 400

    result = billing.materialize_day(day)

    assert not result.success
    run = billing.instance.get_run_by_id(result.run_id)
    assert run is not None
    events = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    alert = run_failure_alert(run, failure, events, UI)
    assert alert.key == f"run/{result.run_id}"
    assert alert.title.startswith("run of ")
    assert alert.days == (day.isoformat(),)
    assert alert.customers == ("cus_gone",)  # the customer that billed fine is not named
    assert alert.run_url == f"{UI}/runs/{result.run_id}"
    assert "No such customer: 'cus_gone'" in alert.details
    assert alert.extra == {"Failed steps": "stripe__meter_events"}


def reconciliation_failure(metadata: dict[str, Any]) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(["stripe", "meter_events"]),
        check_name="stripe_reconciliation",
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        partition="2026-12-05",
        metadata=metadata,
    )


def test_a_check_evaluation_names_its_partition_and_what_its_metadata_lists() -> None:
    evaluation = reconciliation_failure(
        {
            "drifts": 2,
            "customers_with_drift": 2,  # a count, not a list: not taken for customers
            "customer_ids": dg.MetadataValue.json(["cus_B", "cus_A"]),
            "organization_ids": dg.MetadataValue.json([10, 9]),
            "drift_details": dg.MetadataValue.md("| … |"),
        }
    )
    alert = check_failure_alert(42, "run-1", evaluation, UI)
    assert alert.key == "check/42"
    assert alert.title == "check stripe_reconciliation on stripe/meter_events failed"
    assert (alert.days, alert.customers, alert.organizations) == (
        ("2026-12-05",),
        ("cus_A", "cus_B"),
        ("9", "10"),
    )
    assert alert.extra == {"Figures": "drifts 2, customers_with_drift 2"}
    assert alert.run_url == f"{UI}/runs/run-1"

    # Evaluated again with the same findings: the same failure, whatever its event id.
    assert fingerprint(check_failure_alert(43, "run-2", evaluation, UI)) == fingerprint(alert)
    other = reconciliation_failure({"customer_ids": dg.MetadataValue.json(["cus_C"])})
    assert fingerprint(check_failure_alert(44, "run-3", other, UI)) != fingerprint(alert)
