"""The sensor and the job on a real Dagster instance (dagster-postgres)."""

from __future__ import annotations

import json

import dagster as dg
from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import InboxStatus
from billing_pipeline.webhooks.assets import stripe_webhook_inbox
from billing_pipeline.webhooks.checks import stripe_webhook_dead_letters
from billing_pipeline.webhooks.processing import MAX_ATTEMPTS
from billing_pipeline.webhooks.sensors import InboxCursor, stripe_webhook_inbox_sensor
from billing_pipeline_tests.support.dagster_runs import (
    evaluate_sensor,
    pipeline_resources,
    run_webhook_job,
    webhook_definitions,
)
from billing_pipeline_tests.support.webhooks import (
    T0,
    checkout_completed,
    create_organization,
    end_backoffs,
    inbox_rows,
    invoice_event,
    store_events,
    subscription_event,
    subscription_row,
)


def tick(instance: dg.DagsterInstance, database_url: str, cursor: str | None) -> dg.SensorResult:
    return evaluate_sensor(stripe_webhook_inbox_sensor, instance, database_url, cursor)


def run_job(
    instance: dg.DagsterInstance, database_url: str, run_key: str
) -> dg.ExecuteInProcessResult:
    return run_webhook_job(instance, pipeline_resources(database_url), run_key)


def check_result(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == stripe_webhook_dead_letters.check_key.name
    return evaluation


def test_definitions_are_described_and_the_sensor_runs_by_default(database_url: str) -> None:
    dg.Definitions.validate_loadable(webhook_definitions(pipeline_resources(database_url)))
    repository = webhook_definitions(pipeline_resources(database_url)).get_repository_def()
    sensor = repository.get_sensor_def("stripe_webhook_inbox_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.description
    assert repository.get_job("process_stripe_webhooks").description
    assert repository.get_job("recover_stripe_events").description
    schedule = repository.get_schedule_def("stripe_event_recovery_schedule")
    assert schedule.job_name == "recover_stripe_events"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.description
    assert (
        stripe_webhook_dead_letters.check_specs
        and next(iter(stripe_webhook_dead_letters.check_specs)).description
    )


def test_sensor_batches_new_events_and_the_run_applies_them(
    engine: Engine, database_url: str, dagster_instance: dg.DagsterInstance
) -> None:
    idle = tick(dagster_instance, database_url, None)
    assert idle.run_requests == [] or idle.run_requests is None
    assert idle.skip_reason is not None

    org = create_organization(engine)
    store_events(
        engine,
        [
            invoice_event("invoice.paid", "in_1", "sub_1", "cus_1", T0 + 2),
            checkout_completed(org, "cus_1", "sub_1", T0 + 1),
            subscription_event(
                "customer.subscription.created", "sub_1", "cus_1", T0, status="incomplete"
            ),
            subscription_event("customer.subscription.updated", "sub_1", "cus_1", T0 + 3),
        ],
    )
    first_id, last_id = inbox_rows(engine)[0]["id"], inbox_rows(engine)[-1]["id"]

    launched = tick(dagster_instance, database_url, None)

    [request] = launched.run_requests or []
    assert request.run_key == f"inbox-{first_id}-{last_id}"
    assert InboxCursor.parse(launched.cursor).last_id == last_id
    # The receiver stored them outside Dagster: the tick records them on the inbox's history.
    [stored] = launched.asset_events
    assert isinstance(stored, dg.AssetMaterialization)
    assert stored.asset_key == stripe_webhook_inbox.key
    assert stored.metadata["received"] == dg.IntMetadataValue(4)
    assert stored.metadata["last_inbox_id"] == dg.IntMetadataValue(last_id)
    # Nothing new since: the next tick skips and keeps its cursor.
    again = tick(dagster_instance, database_url, launched.cursor)
    assert not again.run_requests and again.skip_reason is not None
    assert not again.asset_events

    result = run_job(dagster_instance, database_url, request.run_key or "")

    assert result.success
    run = dagster_instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["dagster/run_key"] == request.run_key
    [materialization] = result.asset_materializations_for_node("stripe_subscriptions")
    # subscription.created precedes the checkout, so it waits for a retry run.
    assert materialization.metadata["processed"] == dg.IntMetadataValue(3)
    assert materialization.metadata["failed"] == dg.IntMetadataValue(1)
    row = subscription_row(engine, "sub_1")
    assert (row["organization_id"], row["status"], row["payment_status"]) == (org, "active", "paid")
    assert check_result(result).passed


def test_the_sensor_launches_retries_only_when_due_and_a_poison_event_is_dead_lettered_and_shown(
    engine: Engine, database_url: str, dagster_instance: dg.DagsterInstance
) -> None:
    poison = checkout_completed(424242, "cus_x", "sub_x", T0)
    store_events(engine, [poison])
    launched = tick(dagster_instance, database_url, None)
    [request] = launched.run_requests or []
    result = run_job(dagster_instance, database_url, request.run_key or "")
    # The retry poll is rewound on every tick below instead of waiting RETRY_POLL_SECONDS.
    rewound = json.dumps({**json.loads(launched.cursor or "{}"), "next_sweep_at": 0})

    for attempt in range(1, MAX_ATTEMPTS):
        assert result.success
        [row] = inbox_rows(engine)
        assert (row["status"], row["attempts"]) == (InboxStatus.FAILED, attempt)
        # Not due yet: the sensor asks for no run, and a run launched anyway changes nothing.
        waiting = tick(dagster_instance, database_url, rewound)
        assert not waiting.run_requests and waiting.skip_reason is not None
        assert run_job(dagster_instance, database_url, f"by-hand-{attempt}").success
        assert inbox_rows(engine)[0]["attempts"] == attempt
        # Its backoff over (time moved, not slept), the sensor launches a retry run.
        end_backoffs(engine)
        due = tick(dagster_instance, database_url, rewound)
        [request] = due.run_requests or []
        assert request.run_key and request.run_key.startswith("retry-")
        assert request.tags["stripe_webhooks/due_events"] == "1"
        assert InboxCursor.parse(due.cursor).next_sweep_at > 0
        result = run_job(dagster_instance, database_url, request.run_key)

    # Dead-lettered: the check fails and names the event; the sensor stops asking for retries.
    evaluation = check_result(result)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["dead_lettered"] == dg.IntMetadataValue(1)
    assert poison["id"] in str(evaluation.metadata["event_ids"].value)
    assert "organization 424242" in str(evaluation.metadata["events"].value)
    [row] = inbox_rows(engine)
    assert (row["status"], row["attempts"]) == (InboxStatus.DEAD_LETTER, MAX_ATTEMPTS)
    end_backoffs(engine)
    idle = tick(dagster_instance, database_url, rewound)
    assert not idle.run_requests and idle.skip_reason is not None
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM subscriptions")).scalar_one() == 0
