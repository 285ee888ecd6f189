"""The reporting asset: daily usage → ledger → Stripe meter events, exactly once."""

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
from sqlalchemy import Engine, text

from billing_pipeline.partitions import daily_partitions
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_reporting.ledger import plan_window, unsent_rows
from billing_pipeline.stripe_reporting.meter_sync import MeterMismatchError, verify_meters
from billing_pipeline.stripe_reporting.reconciliation import ledger_expectations
from billing_pipeline.stripe_reporting.sender import SendReport, send_rows
from billing_pipeline.usage.assets import usage_asset_key
from billing_pipeline.usage.meters import METERS, Meter

REPORTING_KEY = dg.AssetKey(["stripe", "meter_events"])
STRIPE_POOL = "stripe_api"
FAILURES_SHOWN = 20
PLANNING_CONNECTIONS = 2

# Five attempts in all, 5 s, 10 s, 20 s, 40 s apart (± jitter): long enough to ride out a Stripe
# incident or a rate-limit burst; each attempt resends only what is not yet recorded as sent.
REPORTING_RETRY_POLICY = dg.RetryPolicy(
    max_retries=4, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def _billed_totals(
    engine: Engine, meters: Sequence[Meter], first_day: date, end_day: date
) -> Counter[str]:
    """What Stripe holds per meter for the window, by the ledger: reconciliation's expectation."""
    totals: Counter[str] = Counter()
    expectations = ledger_expectations(engine, meters, first_day, end_day, datetime.now(UTC))
    for expectation in expectations:
        totals[expectation.meter] += expectation.value
    return totals


def _window_status_counts(engine: Engine, first_day: date, end_day: date) -> Counter[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT status, count(*) AS n FROM billing.meter_ledger "
                "WHERE day >= :first_day AND day < :end_day GROUP BY status"
            ),
            {"first_day": first_day, "end_day": end_day},
        )
        return Counter({row.status: int(row.n) for row in rows})


def build_reporting_asset(meters: Sequence[Meter] = METERS) -> dg.AssetsDefinition:
    meters = tuple(meters)

    @dg.asset(
        key=REPORTING_KEY,
        group_name="stripe",
        deps=[usage_asset_key(meter) for meter in meters],
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=STRIPE_POOL,
        retry_policy=REPORTING_RETRY_POLICY,
        kinds={"stripe"},
        description=(
            "Meter events reported to Stripe for each (meter, organization, day). Revisions are "
            "written to the `billing.meter_ledger` before each call and marked after, so reruns "
            "and backfills never bill twice and late data is sent as a difference. Organizations "
            "without a Stripe customer are recorded as skipped."
        ),
    )
    def stripe_meter_events(
        context: dg.AssetExecutionContext, postgres: PostgresResource, stripe: StripeResource
    ) -> dg.MaterializeResult:
        start, end = context.partition_time_window
        first_day, end_day = start.date(), end.date()
        if stripe.concurrency > postgres.max_connections() - PLANNING_CONNECTIONS:
            # Each call in flight holds a ledger row lock, hence a connection: a smaller pool
            # would make senders time out waiting for one, half-way through a run.
            raise dg.Failure(
                description=(
                    f"StripeResource.concurrency is {stripe.concurrency} but the Postgres pool "
                    f"allows {postgres.max_connections()} connections; raise "
                    "PostgresResource.pool_size or lower the concurrency"
                ),
                allow_retries=False,
            )
        engine = postgres.engine()
        client = stripe.client()
        if client is not None:
            try:
                verify_meters(client, meters)
            except MeterMismatchError as error:
                raise dg.Failure(description=str(error), allow_retries=False) from error

        planned = [
            row for meter in meters for row in plan_window(engine, meter, first_day, end_day)
        ]
        planned_counts = Counter(row.status for row in planned)
        context.log.info(
            f"planned {len(planned)} ledger rows for {first_day}..{end_day}: {dict(planned_counts)}"
        )

        if client is None:
            raise dg.Failure(
                description=(
                    "STRIPE_SECRET_KEY is not set, so nothing was sent to Stripe. "
                    f"{planned_counts['pending']} new events are recorded as pending in "
                    "billing.meter_ledger and will be sent by the next run that has a key."
                ),
                allow_retries=False,
                metadata={"planned": len(planned), "pending": planned_counts["pending"]},
            )

        rows = unsent_rows(
            engine, [m.name for m in meters], first_day, end_day, [r.identifier for r in planned]
        )
        report = send_rows(engine, client, rows, concurrency=stripe.concurrency)
        metadata = _metadata(engine, meters, first_day, end_day, planned_counts, report)
        if report.failures:
            raise dg.Failure(
                description=_failure_description(report),
                metadata=metadata,
                allow_retries=report.transient_failures > 0,
            )
        return dg.MaterializeResult(metadata=metadata)

    return stripe_meter_events


def _metadata(
    engine: Engine,
    meters: Sequence[Meter],
    first_day: date,
    end_day: date,
    planned_counts: Counter[str],
    report: SendReport,
) -> dict[str, Any]:
    in_window = _window_status_counts(engine, first_day, end_day)
    metadata: dict[str, Any] = {
        "planned": planned_counts.total(),
        "sent": report.counts["sent"],
        "already_sent": report.counts["already_sent"],
        "skipped": planned_counts["skipped"],
        "failed": report.counts["failed"],
        "expired": planned_counts["expired"] + report.counts["expired"],
        "ledger_pending": in_window["pending"],
        "ledger_failed": in_window["failed"],
        "ledger_expired": in_window["expired"],
        "ledger_rejected": in_window["rejected"],
    }
    for meter, total in sorted(_billed_totals(engine, meters, first_day, end_day).items()):
        metadata[f"stripe_total/{meter}"] = total
    return metadata


def _failure_description(report: SendReport) -> str:
    shown = report.failures[:FAILURES_SHOWN]
    lines = [f"{len(report.failures)} meter events failed (recorded as failed in the ledger):"]
    lines += [f"- {identifier}: {error}" for identifier, error in shown]
    if len(report.failures) > len(shown):
        lines.append(f"… and {len(report.failures) - len(shown)} more")
    lines.append("The next run retries only the rows not yet sent.")
    return "\n".join(lines)
