"""The operator's view of the ledger and of Stripe, as asset checks on `stripe/meter_events`.

- `stripe_reconciliation` (partitioned by day): the ledger against Stripe's daily summaries.
- `ledger_failed_rows`, `ledger_stale_pending_rows`, `ledger_expired_rows`: rows that need a
  person, each listing identifiers, organizations and reasons.

They run after every billing run (jobs over the asset include its checks) and from the
`stripe_reconciliation_schedule`, which re-checks the last week once Stripe's summaries settled:
the billing run itself can only report fresh differences as "settling".
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from sqlalchemy import Engine, text

from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.partitions import daily_partitions
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_reporting.assets import REPORTING_KEY, STRIPE_POOL
from billing_pipeline.stripe_reporting.reconciliation import (
    SETTLE_WINDOW,
    Reconciliation,
    reconcile,
)
from billing_pipeline.usage.meters import METERS, Meter

ROWS_SHOWN = 50
STALE_PENDING_AFTER = timedelta(hours=1)
# Expired rows are permanent (Stripe will never take them), so the check stays red for a week
# after the last one and then only counts them: long enough to be seen, not forever.
EXPIRED_ATTENTION = timedelta(days=7)


# --- ledger rows that need attention ---------------------------------------------------------


@dataclass(frozen=True)
class AttentionRows:
    """Ledger rows in one state: how many, in how many organizations, and the newest few."""

    total: int
    organizations: list[int]
    rows: list[Any]


# A rejected row stays in the ledger as history; it needs attention only until a later revision of
# the same (meter, organization, day) has been sent in its place.
UNRESOLVED_FAILURE = """
    status = 'failed'
    OR (status = 'rejected' AND NOT EXISTS (
        SELECT 1 FROM billing.meter_ledger later
        WHERE later.meter = meter_ledger.meter
          AND later.organization_id = meter_ledger.organization_id
          AND later.day = meter_ledger.day
          AND later.revision > meter_ledger.revision
          AND later.status = 'sent'))
"""


def _attention_rows(engine: Engine, where: str, params: dict[str, Any]) -> AttentionRows:
    with engine.connect() as connection:
        total, organizations = connection.execute(
            text(
                "SELECT count(*), coalesce(array_agg(DISTINCT organization_id), '{}') "
                f"FROM billing.meter_ledger WHERE {where}"
            ),
            params,
        ).one()
        rows = connection.execute(
            text(
                "SELECT identifier, meter, organization_id, day, stripe_customer_id, value, "
                "status_reason, error_code, attempts, created_at, updated_at "
                f"FROM billing.meter_ledger WHERE {where} "
                "ORDER BY updated_at DESC, identifier LIMIT :limit"
            ),
            {**params, "limit": ROWS_SHOWN},
        ).all()
    return AttentionRows(int(total), sorted(organizations), list(rows))


def _attention_result(
    found: AttentionRows, severity: dg.AssetCheckSeverity, extra: dict[str, Any] | None = None
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=found.total == 0,
        severity=severity,
        metadata={
            "rows": found.total,
            "organizations": len(found.organizations),
            "organization_ids": dg.MetadataValue.json(found.organizations),
            "identifiers": dg.MetadataValue.json([row.identifier for row in found.rows]),
            "details": markdown_table(
                ("identifier", "organization", "day", "customer", "value", "code", "reason"),
                [
                    (
                        f"`{row.identifier}`",
                        row.organization_id,
                        row.day,
                        row.stripe_customer_id,
                        row.value,
                        row.error_code,
                        row.status_reason,
                    )
                    for row in found.rows
                ],
            ),
            **(extra or {}),
        },
    )


@dg.asset_check(
    asset=REPORTING_KEY,
    name="ledger_failed_rows",
    description=(
        "Fails while any meter event is `failed` in billing.meter_ledger (Stripe rejected the "
        "call, or the last attempt hit a transient error: the next billing run of that day "
        "resends it), or `rejected` with no later revision sent (Stripe accepted it but reported "
        "it invalid afterwards, in a meter error report: the next run bills the amount under a "
        "new revision). Lists identifiers, organizations, Stripe error codes and reasons; fix "
        "the cause first (e.g. a missing customer)."
    ),
)
def ledger_failed_rows(postgres: PostgresResource) -> dg.AssetCheckResult:
    found = _attention_rows(postgres.engine(), UNRESOLVED_FAILURE, {})
    return _attention_result(found, dg.AssetCheckSeverity.ERROR)


@dg.asset_check(
    asset=REPORTING_KEY,
    name="ledger_stale_pending_rows",
    description=(
        f"Fails while a meter event has been `pending` for more than {STALE_PENDING_AFTER}: it "
        "was planned but no run delivered it (no STRIPE_SECRET_KEY, a crashed or cancelled "
        "run). Re-materialize the listed days; the identifiers are deterministic, so a resend "
        "of something Stripe already holds is deduplicated."
    ),
)
def ledger_stale_pending_rows(postgres: PostgresResource) -> dg.AssetCheckResult:
    cutoff = datetime.now(UTC) - STALE_PENDING_AFTER
    found = _attention_rows(
        postgres.engine(), "status = 'pending' AND created_at < :cutoff", {"cutoff": cutoff}
    )
    return _attention_result(found, dg.AssetCheckSeverity.WARN)


@dg.asset_check(
    asset=REPORTING_KEY,
    name="ledger_expired_rows",
    description=(
        "Warns while meter events were marked `expired` in the last "
        f"{EXPIRED_ATTENTION.days} days: their day is outside Stripe's 35-day window, so the "
        "usage (often a late correction) was not billed and never will be through meters. "
        "Lists them for a manual invoice item or credit; `expired_total` counts all of them."
    ),
)
def ledger_expired_rows(postgres: PostgresResource) -> dg.AssetCheckResult:
    engine = postgres.engine()
    since = datetime.now(UTC) - EXPIRED_ATTENTION
    found = _attention_rows(engine, "status = 'expired' AND updated_at >= :since", {"since": since})
    with engine.connect() as connection:
        expired_total = connection.execute(
            text("SELECT count(*) FROM billing.meter_ledger WHERE status = 'expired'")
        ).scalar_one()
    return _attention_result(
        found, dg.AssetCheckSeverity.WARN, {"expired_total": int(expired_total)}
    )


# --- reconciliation with Stripe --------------------------------------------------------------


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
            ("meter", "day", "customer", "organizations", "ledger", "stripe", "difference"),
            [
                (
                    d.meter,
                    d.day,
                    d.customer,
                    ", ".join(map(str, d.organizations)),
                    d.ledger,
                    d.stripe,
                    d.stripe - d.ledger,
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
        pool=STRIPE_POOL,
        description=(
            "Compares, per meter, Stripe customer and UTC day of the partition (or range), what "
            "billing.meter_ledger says Stripe holds with Stripe's meter event summaries "
            "(value_grouping_window=day): `sum` meters must equal the sum of sent values, `last` "
            "meters the newest sent revision's target. Fails listing every drift with its "
            "customer and organizations. Differences on rows changed in the last "
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
ledger_checks = [ledger_failed_rows, ledger_stale_pending_rows, ledger_expired_rows]
reporting_checks = [stripe_reconciliation, *ledger_checks]
