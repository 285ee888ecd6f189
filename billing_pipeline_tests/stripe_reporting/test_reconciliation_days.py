"""A run over a range of days records `stripe_reconciliation` once per day, in the check's history.

A single-run backfill (or the reconciliation schedule) runs the check once for the whole range;
the operator reads its result per day in the UI, so the instance must hold, for every day of the
run, a passed or failed evaluation with that day's figures: no unpartitioned row, no "Skipped".
Read back from the instance (dagster-postgres), as the UI reads it, not from the run's result.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.base import PartitionKeyFilter

from billing_pipeline.stripe_reporting.assets import REPORTING_KEY, build_reporting_asset
from billing_pipeline.stripe_reporting.checks import reporting_checks
from billing_pipeline.stripe_reporting.jobs import reconciliation_job
from billing_pipeline.stripe_reporting.reconciliation_check import build_reconciliation_check
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import (
    BILLING_ASSETS,
    Billing,
    check_history_of_run,
    day_evaluations,
)
from billing_pipeline_tests.support.reporting import reconcile_days
from billing_pipeline_tests.support.stripe import new_customer

TODAY = datetime.now(UTC).date()
D1, D2, D3 = (TODAY - timedelta(days=offset) for offset in (5, 4, 3))
SETTLED = build_reconciliation_check(settle_window=timedelta(0))
CHECK = SETTLED.check_key


def range_tags(first: date, last: date) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


def bill_three_days(billing: Billing) -> tuple[str, str]:
    """Alpha uses both meters every day; Beta's sensor starts on D2 and reads only on D2."""
    alpha = new_customer(billing.stripe_billing, "Alpha")
    beta = new_customer(billing.stripe_billing, "Beta")
    add_organization(billing.engine, 1, customer=alpha)
    add_organization(billing.engine, 2, customer=beta)
    add_sensor(billing.engine, 11, 1, midnight(D1) - timedelta(days=1))
    add_sensor(billing.engine, 21, 2, midnight(D2) + timedelta(hours=1))
    for offset, day in enumerate((D1, D2, D3)):
        add_readings(billing.engine, 11, day, 3 + offset)
    add_readings(billing.engine, 21, D2, 2)
    return alpha, beta


def test_a_range_run_records_one_reconciliation_per_day(billing: Billing) -> None:
    alpha, _ = bill_three_days(billing)

    result = dg.materialize(
        [*BILLING_ASSETS, SETTLED],
        instance=billing.instance,
        resources=billing.resources(),
        tags=range_tags(D1, D3),
        raise_on_error=False,
    )

    assert result.success
    rows = check_history_of_run(billing.instance, CHECK, result.run_id)
    assert {day: row.status for day, row in rows.items()} == {
        day.isoformat(): AssetCheckExecutionRecordStatus.SUCCEEDED for day in (D1, D2, D3)
    }
    evaluations = day_evaluations(billing.instance, CHECK, result.run_id)
    # (meter, customer) pairs with usage that day: Alpha's two meters, Beta's from D2 (gauge
    # only on D3, as its sensor read nothing).
    assert {day: e.metadata["compared"].value for day, e in evaluations.items()} == {
        D1: 2,
        D2: 4,
        D3: 3,
    }
    for day, evaluation in evaluations.items():
        assert evaluation.metadata["drifts"].value == 0
        assert evaluation.metadata["settling"].value == 0
        # Each day's result is about that day's materialization, so the UI shows it current.
        [materialization] = billing.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=REPORTING_KEY, asset_partitions=[day.isoformat()]),
            limit=1,
        ).records
        target = evaluation.target_materialization_data
        assert target is not None
        assert target.storage_id == materialization.storage_id

    # Someone sends an extra counter event for Alpha on D2, behind the pipeline's back.
    billing.stripe_billing.client.v1.billing.meter_events.create(
        {
            "event_name": "temperature_readings",
            # In the hour window of the pipeline's own event for the day.
            "timestamp": int((midnight(D2) + timedelta(hours=23, minutes=30)).timestamp()),
            "payload": {"stripe_customer_id": alpha, "value": "7"},
        }
    )
    evaluations = reconcile_days(
        billing.instance, billing.database_url, billing.api_base, D1, D3, SETTLED
    )

    assert {day: e.passed for day, e in evaluations.items()} == {D1: True, D2: False, D3: True}
    failed = evaluations[D2].metadata
    assert failed["drifts"].value == 1
    assert failed["compared"].value == 4
    # D2: Alpha's sensor read 4 times; Stripe's pre-aggregated meter (as sync-meters creates
    # it) took the foreign event's 7 as the value of the hour window holding the day's value.
    assert f"| temperature_readings | {D2} | {alpha} | 1 | 4 | 4 | 7.0 |" in str(
        failed["drift_details"].value
    )
    # The check's history per day, as the UI's partition view reads it.
    latest = {
        day: billing.instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [CHECK], partition_filter=PartitionKeyFilter(key=day.isoformat())
        )[CHECK].status
        for day in (D1, D2, D3)
    }
    assert latest == {
        D1: AssetCheckExecutionRecordStatus.SUCCEEDED,
        D2: AssetCheckExecutionRecordStatus.FAILED,
        D3: AssetCheckExecutionRecordStatus.SUCCEEDED,
    }


def test_the_reconciliation_job_over_a_range_evaluates_every_day(billing: Billing) -> None:
    bill_three_days(billing)
    assert dg.materialize(
        BILLING_ASSETS,
        instance=billing.instance,
        resources=billing.resources(),
        tags=range_tags(D1, D3),
    ).success
    defs = dg.Definitions(
        assets=[build_reporting_asset()],
        asset_checks=reporting_checks,
        jobs=[reconciliation_job],
        resources=billing.resources(),
    )

    result = defs.resolve_job_def(reconciliation_job.name).execute_in_process(
        instance=billing.instance, tags=range_tags(D1, D3), raise_on_error=False
    )

    # The production job (default settle window): Stripe already matches, so every day passes,
    # each with its own row; the unpartitioned ledger checks run once beside them.
    assert result.success
    evaluations = day_evaluations(billing.instance, CHECK, result.run_id)
    assert {day: e.passed for day, e in evaluations.items()} == {D1: True, D2: True, D3: True}
    assert evaluations[D2].metadata["compared"].value == 4
    ledger_check = dg.AssetCheckKey(REPORTING_KEY, "ledger_failed_rows")
    assert set(check_history_of_run(billing.instance, ledger_check, result.run_id)) == {None}
