"""`billing_check_alerts` over the instance's real check evaluations: a check that stays red with
the same findings alerts once; new findings, or red again after a pass, alert again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.event_api import EventRecordsFilter
from sqlalchemy import Engine, text

from billing_pipeline import config
from billing_pipeline.alerts.sensors import CheckAlertCursor, billing_check_alerts
from billing_pipeline.definitions import defs
from billing_pipeline.resources import PostgresResource
from billing_pipeline.stripe_reporting.checks import ledger_checks
from billing_pipeline_tests.support.alert_sinks import RecordingSink
from billing_pipeline_tests.support.builders import add_ledger_row
from billing_pipeline_tests.support.dagster_runs import evaluate_checks


def newest_evaluation(instance: dg.DagsterInstance) -> int:
    records = instance.event_log_storage.get_event_records(
        EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=1
    )
    return records[0].storage_id if records else 0


def test_a_check_alerts_when_it_turns_red_and_when_its_findings_change(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    day = datetime.now(UTC).date() - timedelta(days=40)
    # Earlier tests' evaluations in this session's instance are not this test's business.
    cursor: str | None = CheckAlertCursor(after=newest_evaluation(dagster_instance)).serialize()
    repository = defs.get_repository_def()

    def tick() -> None:
        nonlocal cursor
        context = dg.build_sensor_context(
            instance=dagster_instance,
            cursor=cursor,
            resources={"postgres": PostgresResource(database_url=database_url)},
            repository_def=repository,
        )
        billing_check_alerts(context)
        cursor = context.cursor

    def check_run() -> None:
        evaluate_checks(dagster_instance, database_url, ledger_checks)
        tick()

    with RecordingSink() as sink:
        monkeypatch.setenv(config.ALERTS_WEBHOOK_URL, sink.url("/webhook"))
        add_ledger_row(engine, 1, "expired", day=day, customer="cus_A", reason="too late")
        check_run()
        check_run()  # still red, same row: nothing new
        add_ledger_row(engine, 2, "expired", day=day, customer="cus_B", reason="too late")
        check_run()  # a second customer: news
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE billing.meter_ledger"))
        check_run()  # green
        add_ledger_row(engine, 1, "expired", day=day, customer="cus_A", reason="too late")
        check_run()  # red again, as the first time
        tick()  # a tick with nothing new sends nothing
        bodies = sink.bodies("/webhook")

    assert [(b["title"], b["customers"]) for b in bodies] == [
        ("check ledger_expired_rows on stripe/meter_events failed", ["cus_A"]),
        ("check ledger_expired_rows on stripe/meter_events failed", ["cus_A", "cus_B"]),
        ("check ledger_expired_rows on stripe/meter_events failed", ["cus_A"]),
    ]
    assert all(b["days"] == [day.isoformat()] and b["severity"] == "warning" for b in bodies)
    assert len({b["key"] for b in bodies}) == 3
