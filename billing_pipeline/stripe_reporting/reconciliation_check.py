"""`stripe_reconciliation` (partitioned by day): Stripe's daily summaries against the source.

It runs after every billing run (jobs over the asset include its checks) and from the
`stripe_reconciliation_schedule`, which re-checks the last week once Stripe's summaries settled:
the billing run itself can only report fresh differences as "settling".
"""

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import dagster as dg

from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.partitions import daily_partitions
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_reporting.assets import REPORTING_KEY
from billing_pipeline.stripe_reporting.reconciliation import (
    SETTLE_WINDOW,
    Reconciliation,
    reconcile,
)
from billing_pipeline.usage.meters import METERS, Meter

ROWS_SHOWN = 50


def _reconciliation_metadata(outcome: Reconciliation, first: date, end: date) -> dict[str, Any]:
    drifts = outcome.drifts[:ROWS_SHOWN]
    return {
        "window": f"{first}..{end - timedelta(days=1)}",
        "compared": outcome.compared,
        "drifts": len(outcome.drifts),
        "settling": outcome.settling,
        "customers_with_drift": len({drift.customer for drift in outcome.drifts}),
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


def build_reconciliation_check(
    meters: Sequence[Meter] = METERS, settle_window: timedelta = SETTLE_WINDOW
) -> dg.AssetChecksDefinition:
    """The per-day reconciliation check; `settle_window` is a parameter for tests only."""
    meters = tuple(meters)

    @dg.asset_check(
        asset=REPORTING_KEY,
        name="stripe_reconciliation",
        partitions_def=daily_partitions,
        description=(
            "Compares, per meter, Stripe customer and UTC day of the partition (or range), the "
            "source (daily usage attributed to the customer that held the subscription that "
            "day, summed over its organizations) with Stripe's meter event summaries "
            "(value_grouping_window=day). Fails listing every drift with its customer, "
            "organizations, the source value, the ledger's view and Stripe's. Days with rows "
            "unsent, in doubt or changed in the last "
            f"{int(settle_window.total_seconds() // 60)} minutes count as settling (Stripe's "
            "summaries lag), not as drift; stripe_reconciliation_schedule checks again later."
        ),
    )
    def stripe_reconciliation(
        context: dg.AssetCheckExecutionContext,
        postgres: PostgresResource,
        stripe: StripeResource,
    ) -> dg.AssetCheckResult:
        start, end = context.partition_time_window
        first_day, end_day = start.date(), end.date()
        client = stripe.client()
        if client is None:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description="STRIPE_SECRET_KEY is not set: nothing to reconcile against.",
            )
        outcome = reconcile(
            postgres.engine(), client, meters, first_day, end_day, settle_window=settle_window
        )
        context.log.info(
            f"reconciled {first_day}..{end_day}: {outcome.compared} compared, "
            f"{len(outcome.drifts)} drifts, {outcome.settling} settling"
        )
        return dg.AssetCheckResult(
            passed=outcome.ok,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=_reconciliation_metadata(outcome, first_day, end_day),
        )

    return stripe_reconciliation


stripe_reconciliation = build_reconciliation_check()
