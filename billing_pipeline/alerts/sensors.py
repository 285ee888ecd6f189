"""The alert sensors, evaluated by the daemon: failed runs, and failed checks of billing assets.

- `billing_run_failure_alerts` is Dagster's own `run_failure_sensor` over every job of this code
  location (the daily billing run, period-close and late-data runs, ad-hoc materializations
  from the UI, reconciliation, the webhook jobs): one alert per failed run.
- `billing_check_alerts` reads the instance's asset check evaluations after its cursor and
  alerts on the failed ones of every check of the assets in `ALERT_GROUPS` (resolved from the
  code location at each tick, so a new check in those groups is covered without a change here).
  A check that keeps failing on every run with the same days, customers, organizations and
  events is one failure: it alerts when it turns red and again only when what it names changes
  (the cursor keeps, per check and partition, what was last alerted; a pass clears it).

Both record the alert before sending (deliveries.py), so a tick evaluated again never sends the
same failure twice, and both deliver whatever is due, so a failed delivery is retried by the
next tick of either.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

import dagster as dg
from dagster._core.event_api import EventRecordsFilter
from dagster._core.storage.tags import WILL_RETRY_TAG

from billing_pipeline.alerts.deliveries import DeliveryReport, deliver_due, record
from billing_pipeline.alerts.failures import check_failure_alert, fingerprint, run_failure_alert
from billing_pipeline.alerts.sinks import configured_sinks, ui_url
from billing_pipeline.resources import PostgresResource

# The usage and Stripe reporting assets, and the webhook flow (its dead-letter check).
ALERT_GROUPS = ("usage", "stripe", "stripe_webhooks")
SENSOR_INTERVAL_SECONDS = 30
RECORDS_PER_TICK = 500
# A first tick (or a cursor reset) reads the instance's whole history to learn which checks are
# red, but only alerts on evaluations this recent: an alert is about now, not last month.
ALERT_ON_HISTORY_SECONDS = 24 * 3600


def _log_report(log: logging.Logger, report: DeliveryReport) -> None:
    for line in report.sent:
        log.info(f"alert sent: {line}")
    for line in report.retrying:
        log.warning(f"alert delivery failed, will retry: {line}")
    for line in report.given_up:
        log.error(f"alert delivery failed for good: {line}")


@dg.run_failure_sensor(
    name="billing_run_failure_alerts",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Sends an alert for every failed run of this code location (billing, reconciliation, "
        "webhook processing, ad-hoc materializations) that the daemon will not re-run (its last "
        "attempt) to the sinks in BILLING_ALERTS_*: the job, "
        "the failed steps and their errors, the days and customers affected, a link to the run."
    ),
)
def billing_run_failure_alerts(
    context: dg.RunFailureSensorContext, postgres: PostgresResource
) -> None:
    run = context.dagster_run
    # A run the daemon will re-run (run_retries, `dagster/max_retries`) is not the failure yet:
    # its last attempt alerts if it fails too, so one failure makes one message.
    if run.tags.get(WILL_RETRY_TAG) == "true":
        context.log.info(f"run {run.run_id} failed; the daemon re-runs it, so no alert yet")
        return
    sinks = configured_sinks()
    if not sinks:
        context.log.info(f"run {run.run_id} failed; no alert sink configured")
        return
    alert = run_failure_alert(
        context.dagster_run, context.failure_event, context.get_step_failure_events(), ui_url()
    )
    engine = postgres.engine()
    record(engine, alert, sinks)
    _log_report(context.log, deliver_due(engine, sinks))


@dataclass
class CheckAlertCursor:
    """The newest evaluation event read, and the failure last alerted per check and partition."""

    after: int = 0
    failing: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> CheckAlertCursor:
        return cls(**json.loads(raw)) if raw else cls()

    def serialize(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dg.sensor(
    name="billing_check_alerts",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Sends an alert when an asset check of the usage, Stripe reporting or webhook assets "
        "fails (reconciliation drift, failed or in-doubt ledger rows, usage after an invoice "
        "was finalized, dead-lettered webhooks, …): the check, its days, customers, "
        "organizations and events, a link to the run. A check failing again with the same "
        "findings does not alert twice."
    ),
)
def billing_check_alerts(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SkipReason:
    cursor = CheckAlertCursor.parse(context.cursor)
    watched = dg.AssetSelection.groups(*ALERT_GROUPS).resolve_checks(
        context.repository_def.asset_graph  # type: ignore[union-attr]
    )
    records = context.instance.event_log_storage.get_event_records(
        EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=cursor.after
        ),
        limit=RECORDS_PER_TICK,
        ascending=True,
    )
    sinks = configured_sinks()
    engine = postgres.engine()
    ui = ui_url()
    recent = time.time() - ALERT_ON_HISTORY_SECONDS
    alerted = 0
    for event_record in records:
        cursor.after = event_record.storage_id
        entry = event_record.event_log_entry
        evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            continue
        check_key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
        if check_key not in watched:
            continue
        where = f"{check_key.to_user_string()}@{evaluation.partition or ''}"
        if evaluation.passed:
            cursor.failing.pop(where, None)
            continue
        alert = check_failure_alert(event_record.storage_id, entry.run_id, evaluation, ui)
        if cursor.failing.get(where) == (found := fingerprint(alert)):
            continue  # still failing with the same findings: already alerted
        cursor.failing[where] = found
        if entry.timestamp >= recent and record(engine, alert, sinks):
            alerted += 1
    report = deliver_due(engine, sinks)
    _log_report(context.log, report)
    context.update_cursor(cursor.serialize())
    if not sinks:
        return dg.SkipReason(f"no alert sink configured; read {len(records)} check evaluations")
    return dg.SkipReason(
        f"read {len(records)} check evaluations, {alerted} new alerts; {report.summary()}"
    )
