"""Drive the real reporting assets on a real Dagster instance, and read Stripe's own view back."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._record import copy
from sqlalchemy import Engine, text

from billing_pipeline.definitions import defs
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.assets import build_reporting_asset
from billing_pipeline.usage.assets import build_usage_assets
from billing_pipeline.usage.meters import METERS
from billing_pipeline_tests.support.builders import midnight
from billing_pipeline_tests.support.dagster_runs import (
    BILLING_ASSETS,
    day_evaluations,
    emulator_stripe,
    pipeline_resources,
)

TODAY = datetime.now(UTC).date()
ASSETS = BILLING_ASSETS
# The same without step retries, for tests that want to see a failed attempt as it is left.
ASSETS_WITHOUT_RETRIES = [*build_usage_assets(), build_reporting_asset(retry_policy=None)]
Key = tuple[str, str, date]


def reporting_resources(database_url: str, api_base: str | None, **stripe: Any) -> dict[str, Any]:
    """The resources a run binds, on the emulator; `stripe` overrides StripeResource settings."""
    return pipeline_resources(database_url, emulator_stripe(api_base, **stripe))


def refresh_billing_status(
    instance: dg.DagsterInstance, database_url: str, api_base: str | None
) -> dg.MaterializeEvent:
    """Run `billing_status_schedule`'s job as the code server does, with the code location's
    definitions (its verdict reads every check they define), on the emulator; its
    materialization."""
    location = copy(defs, resources=reporting_resources(database_url, api_base))
    job_name = defs.resolve_schedule_def("billing_status_schedule").job_name
    result = location.resolve_job_def(job_name).execute_in_process(instance=instance)
    [materialization] = result.asset_materializations_for_node("billing__status")
    return materialization


def run_days(
    instance: dg.DagsterInstance,
    database_url: str,
    api_base: str | None,
    first: date,
    last: date | None = None,
    *,
    assets: list[Any] | None = None,
    **kwargs: Any,
) -> dg.ExecuteInProcessResult:
    """Materialize the usage and reporting assets for one day or a range, as one run."""
    last = last or first
    return dg.materialize(
        assets or ASSETS,
        instance=instance,
        resources=reporting_resources(database_url, api_base, **kwargs),
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        raise_on_error=False,
    )


def subscribed_customers(engine: Engine) -> list[str]:
    """The Stripe customers of the seeded subscriptions, in organization order."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT stripe_customer_id FROM subscriptions ORDER BY organization_id")
            ).scalars()
        )


def stripe_view(
    billing: StripeBilling, customers: list[str], first: date, end: date
) -> dict[Key, float]:
    """What Stripe holds: its daily summary per meter, customer and UTC day (non-zero ones)."""
    remote = {m.event_name: m for m in billing.list_meters() if m.status == "active"}
    view: dict[Key, float] = {}
    for meter in METERS:
        for customer in customers:
            for day, value in billing.daily_totals(
                remote[meter.event_name].id, customer, midnight(first), midnight(end)
            ).items():
                if value:
                    view[(meter.name, customer, day)] = value
    return view


def period_value(
    billing: StripeBilling, event_name: str, customer: str, first: date, end: date
) -> float:
    """Stripe's aggregate over whole days [first, end) (no grouping window)."""
    return stripe_value(billing, event_name, customer, midnight(first), midnight(end))


def stripe_value(
    billing: StripeBilling, event_name: str, customer: str, start: datetime, end: datetime
) -> float:
    """Stripe's aggregate over [start, end) (minute-aligned instants, no grouping window): what
    an invoice for a period with those bounds bills."""
    meter = next(
        m for m in billing.list_meters() if m.event_name == event_name and m.status == "active"
    )
    summaries = billing.client.v1.billing.meters.event_summaries.list(
        meter.id,
        {
            "customer": customer,
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
        },
    )
    return sum(float(s.aggregated_value) for s in summaries.auto_paging_iter())


def add_billing_period(
    engine: Engine, subscription: str, customer: str, start: datetime, end: datetime
) -> None:
    """A billing period as the webhook flow records it (`customer.subscription.*`)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO billing.billing_periods (stripe_subscription_id, period_start, "
                "period_end, stripe_customer_id) VALUES (:subscription, :start, :end, :customer)"
            ),
            {"subscription": subscription, "start": start, "end": end, "customer": customer},
        )


def subscribe(
    engine: Engine,
    organization: int,
    customer: str | None,
    *,
    started: datetime | None = datetime(2024, 1, 1, tzinfo=UTC),
    ended: datetime | None = None,
    status: str = "active",
) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscriptions (organization_id, stripe_customer_id, status, "
                "started_at, ended_at) VALUES (:org, :customer, :status, :started, :ended)"
            ),
            {
                "org": organization,
                "customer": customer,
                "status": status,
                "started": started,
                "ended": ended,
            },
        )


def move_subscriptions(engine: Engine, organization: int, customer: str) -> None:
    """The organization's subscription now belongs to another customer (webhooks applied)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE subscriptions SET stripe_customer_id = :customer "
                "WHERE organization_id = :org"
            ),
            {"customer": customer, "org": organization},
        )


def ledger_statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT status, count(*) AS n FROM billing.meter_ledger GROUP BY status")
        )
        return {row.status: int(row.n) for row in rows}


def days_before(n: int) -> date:
    return TODAY - timedelta(days=n)


def reconcile_days(
    instance: dg.DagsterInstance,
    database_url: str,
    api_base: str,
    first: date,
    last: date,
    check: dg.AssetChecksDefinition,
) -> dict[date, dg.AssetCheckEvaluation]:
    """Launch the reconciliation check alone over a partition range, as its schedule does; each
    day's evaluation as the instance recorded it."""
    job = dg.define_asset_job(
        "reconcile", selection=dg.AssetSelection.checks(check), partitions_def=check.partitions_def
    )
    defs = dg.Definitions(
        assets=[build_reporting_asset()],
        asset_checks=[check],
        jobs=[job],
        resources=reporting_resources(database_url, api_base),
    )
    result = defs.resolve_job_def("reconcile").execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        raise_on_error=False,
    )
    return day_evaluations(instance, check.check_key, result.run_id)
