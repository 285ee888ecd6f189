"""The reporting asset: daily usage → ledger → Stripe meter events, exact per customer and day."""

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from sqlalchemy import Engine

from billing_pipeline.day_ranges import day_range
from billing_pipeline.db.statuses import LedgerStatus, SendOutcome
from billing_pipeline.partitions import daily_partitions
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_client import RemoteMeter, StripeBilling
from billing_pipeline.stripe_reporting.cancels import cancel_rows
from billing_pipeline.stripe_reporting.dry_run_report import ReportingConfig, dry_run_result
from billing_pipeline.stripe_reporting.in_doubt import mark_in_doubt, settle_in_doubt
from billing_pipeline.stripe_reporting.leases import revoke_leases
from billing_pipeline.stripe_reporting.ledger import (
    STRIPE_WINDOW,
    status_counts_by_day,
    unsent_chunks,
)
from billing_pipeline.stripe_reporting.locking import (
    HeldLock,
    ReportingLockTimeoutError,
    reporting_lock,
)
from billing_pipeline.stripe_reporting.meter_sync import MeterMismatchError, verify_meters
from billing_pipeline.stripe_reporting.planning import MeterTarget, plan_targets
from billing_pipeline.stripe_reporting.reconciliation import day_totals
from billing_pipeline.stripe_reporting.sender import SendReport, send_chunks
from billing_pipeline.stripe_reporting.shared_meters import record_stripe_meters
from billing_pipeline.usage.assets import usage_asset_key
from billing_pipeline.usage.meters import METERS, Meter
from billing_pipeline.webhooks.assets import stripe_subscriptions

REPORTING_KEY = dg.AssetKey(["stripe", "meter_events"])
FAILURES_SHOWN = 20

# Five attempts in all, 5 s, 10 s, 20 s, 40 s apart (± jitter): long enough to ride out a Stripe
# incident or a rate-limit burst; each attempt re-plans and resends only what is not yet sent.
REPORTING_RETRY_POLICY = dg.RetryPolicy(
    max_retries=4, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def planned_days(first_day: date, end_day: date, now: datetime) -> tuple[date, date]:
    """The partition's days plus every day Stripe still accepts: each run converges them all.

    A day whose customer changed, that had no customer, or whose usage changed since it was
    billed is corrected by whichever run comes next, not only by a run of that very day. Today
    is planned only by a run of today's partition (a period-close run), which computes its
    usage first; planning keeps only the parts that have ended (`planning.py`).
    """
    return min(first_day, (now - STRIPE_WINDOW).date()), max(end_day, now.date())


def build_reporting_asset(
    meters: Sequence[Meter] = METERS, retry_policy: dg.RetryPolicy | None = REPORTING_RETRY_POLICY
) -> dg.AssetsDefinition:
    """The reporting asset; `retry_policy` is a parameter for tests that watch one attempt."""
    meters = tuple(meters)

    @dg.asset(
        key=REPORTING_KEY,
        group_name="stripe",
        # The subscriptions decide who pays for each day (attribution reads them): the edge
        # shows that in the graph; the daily job still selects only the usage and this asset.
        deps=[*(usage_asset_key(meter) for meter in meters), stripe_subscriptions.key],
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=retry_policy,
        kinds={"stripe"},
        description=(
            "Meter events reported to Stripe per (meter, Stripe customer, UTC day): the usage of "
            "the organizations the customer held a billable subscription for that day, summed. "
            "Revisions are written to `billing.meter_ledger` before each call and marked after "
            "(v1 meter events or the v2 meter event stream, per `StripeResource`). "
            "Every run plans its partition and every day still inside Stripe's 35-day window, "
            "so customer moves, backdated subscriptions and late data are corrected by the next "
            "run. One run reports at a time (a Postgres session lock, freed if a run dies)."
        ),
    )
    def stripe_meter_events(
        context: dg.AssetExecutionContext,
        config: ReportingConfig,
        postgres: PostgresResource,
        stripe: StripeResource,
    ) -> dg.MaterializeResult:
        start, end = context.partition_time_window
        first_day, end_day = start.date(), end.date()
        client = stripe.client()
        if client is None:
            # The kind of each Stripe meter decides what a revision carries: nothing is planned
            # without asking Stripe.
            raise dg.Failure(
                description=(
                    "STRIPE_SECRET_KEY is not set, so nothing was planned or sent. The next run "
                    "with a key plans and sends every day still inside Stripe's window."
                ),
                allow_retries=False,
            )
        try:
            remote = verify_meters(client, meters)
        except MeterMismatchError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from error
        targets = [MeterTarget(meter, remote[meter.name].event_time_window) for meter in meters]
        engine = postgres.engine()
        # Attribution holds the usage that several subscriptions of a customer price on one meter
        # by this meter id (shared_meters.py).
        record_stripe_meters(engine, remote)
        if config.dry_run:
            plan = planned_days(first_day, end_day, datetime.now(UTC))
            return dry_run_result(engine, targets, *plan)
        try:
            with reporting_lock(engine, context.log.info) as lock:
                return _report(
                    context,
                    engine,
                    client,
                    targets,
                    remote,
                    (first_day, end_day),
                    stripe,
                    lock,
                )
        except ReportingLockTimeoutError as error:
            raise dg.Failure(description=str(error), allow_retries=True) from error

    return stripe_meter_events


def _report(
    context: dg.AssetExecutionContext,
    engine: Engine,
    client: StripeBilling,
    targets: Sequence[MeterTarget],
    remote: dict[str, RemoteMeter],
    days: tuple[date, date],
    settings: StripeResource,
    lock: HeldLock,
) -> dg.MaterializeResult:
    first_day, end_day = days
    now = datetime.now(UTC)
    plan_first, plan_end = planned_days(first_day, end_day, now)
    differences = frozenset(t.meter.name for t in targets if not t.sends_whole_values)
    newly_in_doubt = mark_in_doubt(engine, sorted(differences), now)
    settled = settle_in_doubt(engine, client, {name: remote[name].id for name in differences})
    planned_by_day = plan_targets(engine, targets, plan_first, plan_end, now)
    planned_counts: Counter[str] = Counter()
    for (_, status), n in planned_by_day.items():
        planned_counts[status] += n
    context.log.info(
        f"planned {planned_counts.total()} ledger rows for {day_range(plan_first, plan_end)}: "
        f"{dict(planned_counts)}; in doubt: {newly_in_doubt} new, settled {settled}"
    )
    if revoked := revoke_leases(engine):
        context.log.warning(f"freed {revoked} ledger rows leased by a reporting run that died")
    cancels = cancel_rows(engine, client, sorted(differences))
    if cancels.counts[SendOutcome.CANCEL_REFUSED]:
        # Stripe still counts the events it would not cancel: the slots are planned again from
        # what it holds (recorded uncorrectable), before anything that relied on them is sent.
        planned_by_day += plan_targets(engine, targets, plan_first, plan_end, now)
    report = send_chunks(
        engine,
        client,
        unsent_chunks(engine, [t.meter.name for t in targets], plan_first, plan_end),
        concurrency=settings.concurrency,
        differences=differences,
        api=settings.event_api(),
        lease=timedelta(seconds=settings.lease_seconds),
        breaker_failures=settings.breaker_failures,
        stop_when=lock.lost_reason,
    )
    report.merge(cancels)
    context.log.info(
        f"sent {report.counts[SendOutcome.SENT]} of {planned_counts.total()} planned ledger rows "
        f"(and any left unsent by earlier runs); {report.counts[SendOutcome.ALREADY_SENT]} of "
        f"them Stripe already held from an earlier attempt (already_in_stripe: counted as sent, "
        f"billed once); failed {report.counts[SendOutcome.FAILED]}, deferred "
        f"{report.counts[SendOutcome.DEFERRED]}"
    )
    by_day = _metadata_by_day(engine, targets, (first_day, end_day), now, planned_by_day, report)
    # A range run materializes every day of its window at once: each day's materialization
    # carries that day's own figures, so the UI's plots over partitions are the daily series.
    for key in context.partition_keys:
        day = daily_partitions.time_window_for_partition_key(key).start.date()
        context.add_asset_metadata(by_day[day], partition_key=key)
    # What the run as a whole did (it also plans the rest of Stripe's window), named as such.
    run_metadata: dict[str, Any] = {
        "run window": day_range(first_day, end_day),
        "run/planned": planned_counts.total(),
        "run/sent": report.counts[SendOutcome.SENT],
        "run/failed": report.counts[SendOutcome.FAILED],
        "run/deferred": report.counts[SendOutcome.DEFERRED],
        "settled_sent": settled[LedgerStatus.SENT],
        "settled_absent": settled[LedgerStatus.ABSENT],
    }
    if report.failures or report.stopped:
        raise dg.Failure(
            description=_failure_description(report),
            metadata={
                **run_metadata,
                "customer_ids": dg.MetadataValue.json(sorted(report.failed_customers)),
                "days": dg.MetadataValue.json(sorted(d.isoformat() for d in report.failed_days)),
            },
            allow_retries=report.transient_failures > 0 or report.stopped is not None,
        )
    return dg.MaterializeResult(metadata=run_metadata)


# The per-day counts of what a run did, shown on every partition (expired adds the planned ones).


def _metadata_by_day(
    engine: Engine,
    targets: Sequence[MeterTarget],
    days: tuple[date, date],
    now: datetime,
    planned: Counter[tuple[date, str]],
    report: SendReport,
) -> dict[date, dict[str, Any]]:
    """Each day's figures: what this run planned and sent for it, and where its ledger stands
    (the source's total over the parts ended by `now`, the ones it planned)."""
    first_day, end_day = days
    windows = {t.meter.name: t.window for t in targets}
    totals = day_totals(engine, [t.meter for t in targets], windows, first_day, end_day, now)
    statuses = status_counts_by_day(engine, first_day, end_day)
    by_day: dict[date, dict[str, Any]] = {}
    day = first_day
    while day < end_day:
        sent = report.counts_by_day
        metadata: dict[str, Any] = {
            "planned": sum(n for (d, _), n in planned.items() if d == day),
            "sent": sent[(day, SendOutcome.SENT)],
            # Stripe answered "already have this identifier": a resend of a row an earlier
            # attempt delivered (a crash between sending and recording). Counted as sent.
            "already_in_stripe": sent[(day, SendOutcome.ALREADY_SENT)],
            "failed": sent[(day, SendOutcome.FAILED)],
            "expired": planned[(day, LedgerStatus.EXPIRED)] + sent[(day, SendOutcome.EXPIRED)],
            "in_doubt": sent[(day, SendOutcome.IN_DOUBT)],
            **{f"ledger_{s}": n for (d, s), n in sorted(statuses.items()) if d == day},
        }
        for target in targets:
            name = target.meter.name
            metadata[f"stripe_meter_window/{name}"] = target.window or "raw"
            # What the source bills for the day, and what the ledger says Stripe holds: the
            # reconciliation check compares the first with Stripe's own summaries.
            source, held = totals.get((name, day), (0, 0))
            metadata[f"source_total/{name}"] = source
            metadata[f"ledger_total/{name}"] = held
        by_day[day] = metadata
        day += timedelta(days=1)
    return by_day


def _failure_description(report: SendReport) -> str:
    shown = report.failures[:FAILURES_SHOWN]
    lines = []
    if report.failures:
        lines.append(
            f"{len(report.failures)} meter events failed (recorded as failed in the ledger):"
        )
    lines += [f"- {identifier}: {error}" for identifier, error in shown]
    if len(report.failures) > len(shown):
        lines.append(f"… and {len(report.failures) - len(shown)} more")
    if report.stopped:
        lines.append(f"The run {report.stopped}.")
    lines.append("The next run retries only the rows not yet sent.")
    return "\n".join(lines)
