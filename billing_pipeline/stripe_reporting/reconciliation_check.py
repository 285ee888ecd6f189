"""`stripe_reconciliation` (partitioned by day): Stripe's daily summaries against the source.

It runs in its own job (`stripe_reconciliation`, launched daily by
`stripe_reconciliation_schedule` over Stripe's 35-day window, after the billing run and the
trailing recompute have settled), never inside `daily_billing`: the billing run does not wait for
Stripe reads, and a reconciliation right after sending could only call fresh differences
"settling".

A run over a range of days (the single-run backfill policy, the schedule) has no single
partition key, and an `AssetCheckResult` returned from such a step is recorded without a
partition, while the run had planned one evaluation per day: those planned rows would end as
"Skipped". So the check yields one `AssetCheckEvaluation` per day of the run, each with that
day's partition, figures and target materialization; Dagster records each against its planned
row, and the check's history shows a result per day whatever the shape of the run.

Each day's metadata also shows the run's coverage (reconciliation_coverage.py): the pairs asked
about by reason, the reads made against the day's budget, and what was left for later runs.
"""

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

# Not exported by `dagster`, but the field is public on `AssetCheckEvaluation`: without it the UI
# cannot tell a day's result is about that day's latest materialization.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.partitions import daily_partitions
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_reporting.assets import REPORTING_KEY
from billing_pipeline.stripe_reporting.reconciliation import (
    SETTLE_WINDOW,
    Reconciliation,
    reconcile,
)
from billing_pipeline.stripe_reporting.reconciliation_coverage import Coverage, RotationPolicy
from billing_pipeline.usage.meters import METERS, Meter

CHECK_NAME = "stripe_reconciliation"
ROWS_SHOWN = 50


def _coverage_metadata(coverage: Coverage) -> dict[str, Any]:
    """What the run covered and what it left: the same on every day of the run."""
    return {
        "pairs_asked": len(coverage.reasons),
        "pairs_compared": len(coverage.compared),
        "pairs_total": coverage.pairs_total,
        "pairs_asked_by_reason": dg.MetadataValue.json(coverage.by_reason()),
        "customers_asked": len({customer for _, customer in coverage.reasons}),
        "customers_total": coverage.customers_total,
        "calls_made": coverage.calls_made,
        "calls_today": coverage.calls_before + coverage.calls_made,
        "call_budget_per_day": coverage.policy.daily_calls,
        "rotation_days": coverage.policy.rotation_days,
        "rotation_quota": coverage.rotation_quota,
        "budget_covers_rotation": coverage.budget_covers_rotation,
        "pairs_left": coverage.pairs_total - len(coverage.compared),
        "anomalies_left": coverage.anomalies_left,
        "never_compared_left": coverage.never_compared_left,
        "oldest_left_age_days": coverage.oldest_left_age_days,
        "overdue_left": coverage.overdue_left,
        "stopped": coverage.stopped or "",
    }


def _reconciliation_metadata(outcome: Reconciliation) -> dict[str, Any]:
    drifts = outcome.drifts[:ROWS_SHOWN]
    coverage = outcome.coverage
    return {
        **_coverage_metadata(coverage),
        "compared": outcome.compared,
        "drifts": len(outcome.drifts),
        "settling": outcome.settling,
        "customers_with_drift": len({drift.customer for drift in outcome.drifts}),
        "customer_ids": dg.MetadataValue.json(sorted({drift.customer for drift in outcome.drifts})),
        "missing_meters": dg.MetadataValue.json(outcome.missing_meters),
        "drift_details": markdown_table(
            ("meter", "day", "customer", "organizations", "source", "ledger", "stripe"),
            [
                (
                    d.meter,
                    d.day,
                    d.customer,
                    ", ".join(map(str, d.organizations)),
                    d.source,
                    d.ledger,
                    d.stripe,
                )
                for d in drifts
            ],
        ),
    }


def _evaluation(
    context: dg.AssetCheckExecutionContext,
    day: str,
    passed: bool,
    severity: dg.AssetCheckSeverity,
    metadata: dict[str, Any] | None = None,
    description: str | None = None,
) -> dg.AssetCheckEvaluation:
    """One day's evaluation, pointing at that day's latest materialization as Dagster does for a
    single-partition `AssetCheckResult` (the UI compares the two to tell a stale result)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=REPORTING_KEY, asset_partitions=[day]), limit=1
    ).records
    target = (
        AssetCheckEvaluationTargetMaterializationData(
            storage_id=records[0].storage_id,
            run_id=records[0].run_id,
            timestamp=records[0].timestamp,
        )
        if records
        else None
    )
    return dg.AssetCheckEvaluation(
        asset_key=REPORTING_KEY,
        check_name=CHECK_NAME,
        passed=passed,
        severity=severity,
        metadata=metadata or {},
        description=description,
        partition=day,
        target_materialization_data=target,
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_reconciliation_check(
    meters: Sequence[Meter] = METERS,
    settle_window: timedelta = SETTLE_WINDOW,
    clock: Callable[[], datetime] = _utc_now,
    policy: RotationPolicy | None = None,
) -> dg.AssetChecksDefinition:
    """The per-day reconciliation check; `settle_window`, `clock` and `policy` are parameters
    for tests only (`clock` stamps comparisons and decides the budget's day; without `policy`
    each run reads the environment's)."""
    meters = tuple(meters)

    # `asset_check` is typed for a returned `AssetCheckResult`; Dagster runs a generator check
    # too and records each yielded `AssetCheckEvaluation` (execute_step.py), which a range needs.
    @dg.asset_check(  # type: ignore[arg-type]
        asset=REPORTING_KEY,
        name=CHECK_NAME,
        partitions_def=daily_partitions,
        description=(
            "Compares, per meter, Stripe customer and UTC day, the source (daily usage "
            "attributed to the customer that held the subscription that day, summed over its "
            "organizations) with Stripe's meter event summaries (value_grouping_window=day), "
            "and records one result per day, also when a run covers a range of days. A day "
            "fails listing every drift with its customer, organizations, the source value, the "
            "ledger's view and Stripe's. Days with rows unsent, in doubt or changed in the last "
            f"{int(settle_window.total_seconds() // 60)} minutes count as settling (Stripe's "
            "summaries lag), not as drift; stripe_reconciliation_schedule checks again later. "
            "Each run asks Stripe about a bounded number of (meter, customer) pairs a day "
            "(STRIPE_RECONCILIATION_DAILY_CALLS): open drifts and anomalies first (failed, "
            "rejected, in-doubt rows, corrections, subscription changes), then periods about to "
            "close, then the least recently compared, so every pair is compared at least once "
            "every STRIPE_RECONCILIATION_ROTATION_DAYS days; the metadata shows what was "
            "covered and what was left."
        ),
    )
    def stripe_reconciliation(
        context: dg.AssetCheckExecutionContext,
        postgres: PostgresResource,
        stripe: StripeResource,
    ) -> Iterator[dg.AssetCheckEvaluation | dg.Output[None]]:
        start, end = context.partition_time_window
        first_day, end_day = start.date(), end.date()
        client = stripe.client()
        if client is None:
            for day in context.partition_keys:
                yield _evaluation(
                    context,
                    day,
                    passed=False,
                    severity=dg.AssetCheckSeverity.WARN,
                    description="STRIPE_SECRET_KEY is not set: nothing to reconcile against.",
                )
        else:
            outcomes = reconcile(
                postgres.engine(),
                client,
                meters,
                first_day,
                end_day,
                settle_window=settle_window,
                now=clock(),
                policy=policy,
            )
            for day, outcome in outcomes.items():
                context.log.info(
                    f"reconciled {day}: {outcome.compared} compared, "
                    f"{len(outcome.drifts)} drifts, {outcome.settling} settling"
                )
                yield _evaluation(
                    context,
                    day.isoformat(),
                    passed=outcome.ok,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata=_reconciliation_metadata(outcome),
                )
        # The check's own output, as Dagster emits it beside an AssetCheckResult's evaluation.
        yield dg.Output(None)

    return stripe_reconciliation


stripe_reconciliation = build_reconciliation_check()
