"""The ledger attention checks on a real Dagster instance: they fail on exactly the rows that
need a person (failed, pending too long, in doubt, recently expired) and pass otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine

from billing_pipeline.definitions import defs
from billing_pipeline.stripe_reporting.checks import (
    ledger_checks,
    ledger_expired_rows,
    ledger_failed_rows,
    ledger_in_doubt_rows,
    ledger_stale_pending_rows,
    reporting_checks,
)
from billing_pipeline.stripe_reporting.reconciliation_check import stripe_reconciliation
from billing_pipeline_tests.support.builders import add_ledger_row
from billing_pipeline_tests.support.dagster_runs import evaluate_checks

NOW = datetime.now(UTC)


def run_checks(
    instance: dg.DagsterInstance, database_url: str
) -> dict[str, dg.AssetCheckEvaluation]:
    return evaluate_checks(instance, database_url, ledger_checks)


def names(check: dg.AssetChecksDefinition) -> str:
    return next(iter(check.check_keys)).name


def test_checks_pass_on_a_healthy_ledger(
    engine: Engine, database_url: str, dagster_instance: dg.DagsterInstance
) -> None:
    add_ledger_row(engine, 1, "sent", age=timedelta(days=2))
    # A run is delivering this one now.
    add_ledger_row(engine, 3, "pending", customer="cus_C", age=timedelta(minutes=10))
    add_ledger_row(
        engine, 4, "expired", age=timedelta(days=30), day=NOW.date() - timedelta(days=60)
    )

    evaluations = run_checks(dagster_instance, database_url)

    assert {name: e.passed for name, e in evaluations.items()} == {
        names(check): True for check in ledger_checks
    }
    expired = evaluations[names(ledger_expired_rows)].metadata
    assert expired["rows"].value == 0
    assert expired["expired_total"].value == 1  # still counted, no longer alarming


@pytest.mark.parametrize(
    ("check", "row", "severity"),
    [
        (
            ledger_failed_rows,
            {"status": "failed", "reason": "Stripe rejected", "error_code": "resource_missing"},
            dg.AssetCheckSeverity.ERROR,
        ),
        (
            ledger_stale_pending_rows,
            {"status": "pending", "age": timedelta(hours=2)},
            dg.AssetCheckSeverity.WARN,
        ),
        (
            ledger_expired_rows,
            {"status": "expired", "reason": "outside window"},
            dg.AssetCheckSeverity.WARN,
        ),
        (
            ledger_in_doubt_rows,
            {"status": "in_doubt", "reason": "attempted more than 23 h ago"},
            dg.AssetCheckSeverity.ERROR,
        ),
    ],
)
def test_each_check_fails_naming_rows_customers_organizations_and_reasons(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    check: dg.AssetChecksDefinition,
    row: dict[str, Any],
    severity: dg.AssetCheckSeverity,
) -> None:
    add_ledger_row(engine, 1, "sent")
    identifiers = [add_ledger_row(engine, org, customer=f"cus_{org}", **row) for org in (7, 9)]

    evaluations = run_checks(dagster_instance, database_url)
    evaluation = evaluations[names(check)]

    # The rows stay as they are; the check only reports them.
    assert not evaluation.passed
    assert evaluation.severity == severity
    assert evaluation.metadata["rows"].value == 2
    assert evaluation.metadata["customers"].value == 2
    assert evaluation.metadata["organization_ids"].value == [7, 9]
    assert sorted(evaluation.metadata["identifiers"].value) == sorted(identifiers)  # type: ignore[arg-type]
    details = str(evaluation.metadata["details"].value)
    assert all(identifier in details for identifier in identifiers)
    if reason := row.get("reason"):
        assert reason in details
    assert all(e.passed for name, e in evaluations.items() if name != names(check))


def test_every_check_is_described_and_wired_into_the_code_location() -> None:
    repository = defs.get_repository_def()
    wired = set(repository.asset_graph.asset_check_keys)
    for check in reporting_checks:
        [spec] = check.check_specs
        assert spec.description
        assert spec.key in wired
    assert {"stripe_reconciliation"} <= {job.name for job in repository.get_all_jobs()}
    every_check = {spec.key for check in reporting_checks for spec in check.check_specs}
    # The billing run never waits on Stripe reads: reconciliation runs in its own job.
    billing_job = repository.get_job("daily_billing")
    assert set(billing_job.asset_layer.asset_graph.asset_check_keys) == every_check - {
        stripe_reconciliation.check_key
    }
    reconciliation = repository.get_job("stripe_reconciliation")
    assert set(reconciliation.asset_layer.asset_graph.asset_check_keys) == every_check
