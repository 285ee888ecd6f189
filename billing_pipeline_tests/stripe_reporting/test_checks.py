"""The ledger attention checks on a real Dagster instance: they fail on exactly the rows that
need a person (failed, pending too long, recently expired) and pass otherwise."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from billing_pipeline.definitions import defs
from billing_pipeline.resources import PostgresResource
from billing_pipeline.stripe_reporting.checks import (
    ledger_checks,
    ledger_expired_rows,
    ledger_failed_rows,
    ledger_stale_pending_rows,
    reporting_checks,
)
from billing_pipeline.stripe_reporting.identifiers import event_identifier, event_timestamp

NOW = datetime.now(UTC)
DAY = NOW.date() - timedelta(days=3)


def insert_row(
    engine: Engine,
    organization_id: int,
    status: str,
    *,
    meter: str = "temperature_readings",
    day: date = DAY,
    revision: int = 1,
    value: int = 5,
    target: int | None = None,
    customer: str | None = "cus_A",
    age: timedelta = timedelta(0),
    reason: str | None = None,
    error_code: str | None = None,
) -> str:
    """One ledger row as the reporting asset would have left it, `age` old."""
    identifier = event_identifier(meter, organization_id, day, revision)
    at = NOW - age
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO billing.meter_ledger
                    (identifier, meter, organization_id, day, revision, event_name,
                     stripe_customer_id, value, target_value, event_timestamp, status,
                     status_reason, error_code, created_at, updated_at, sent_at)
                VALUES (:identifier, :meter, :org, :day, :revision, :meter, :customer, :value,
                        :target, :ts, :status, :reason, :code, :at, :at,
                        CASE WHEN :status = 'sent' THEN CAST(:at AS timestamptz) END)
                """
            ),
            {
                "identifier": identifier,
                "meter": meter,
                "org": organization_id,
                "day": day,
                "revision": revision,
                "customer": customer,
                "value": value,
                "target": value if target is None else target,
                "ts": event_timestamp(day, revision),
                "status": status,
                "reason": reason,
                "code": error_code,
                "at": at,
            },
        )
    return identifier


def run_checks(
    instance: dg.DagsterInstance, database_url: str
) -> dict[str, dg.AssetCheckEvaluation]:
    result = dg.materialize(
        ledger_checks,
        instance=instance,
        resources={"postgres": PostgresResource(database_url=database_url)},
        selection=dg.AssetSelection.checks(*ledger_checks),
        raise_on_error=False,
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def names(check: dg.AssetChecksDefinition) -> str:
    return next(iter(check.check_keys)).name


def test_checks_pass_on_a_healthy_ledger(
    engine: Engine, database_url: str, dagster_instance: dg.DagsterInstance
) -> None:
    insert_row(engine, 1, "sent", age=timedelta(days=2))
    insert_row(engine, 2, "skipped", customer=None, reason="free tier")
    insert_row(engine, 3, "pending", age=timedelta(minutes=10))  # a run is delivering it now
    insert_row(engine, 4, "expired", age=timedelta(days=30), day=NOW.date() - timedelta(days=60))

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
    ],
)
def test_each_check_fails_naming_rows_organizations_and_reasons(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    check: dg.AssetChecksDefinition,
    row: dict[str, Any],
    severity: dg.AssetCheckSeverity,
) -> None:
    insert_row(engine, 1, "sent")
    identifiers = [insert_row(engine, org, **row) for org in (7, 9)]

    evaluations = run_checks(dagster_instance, database_url)
    evaluation = evaluations[names(check)]

    # The rows stay as they are; the check only reports them.
    assert not evaluation.passed
    assert evaluation.severity == severity
    assert evaluation.metadata["rows"].value == 2
    assert evaluation.metadata["organizations"].value == 2
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
    billing_job = repository.get_job("daily_billing")
    assert {spec.key for check in reporting_checks for spec in check.check_specs} <= set(
        billing_job.asset_layer.asset_graph.asset_check_keys
    )
