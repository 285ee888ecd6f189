"""The alert sensors as the real dagster-daemon evaluates them, delivering to a real HTTP sink.

A code server, webserver and daemon run as in production (support/processes.py) with both sinks
(Slack's payload and the generic JSON webhook) pointed at a local HTTP server. Two runs are
submitted through the webserver: one whose checks find an expired ledger row, one that fails
because Stripe does not know a customer. Each failure must arrive exactly once per sink, naming
what failed, the day, the customer and the run's link, though the sensors tick every 30 s for
as long as the test waits.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from billing_pipeline import config
from billing_pipeline.db.statuses import AlertDeliveryStatus
from billing_pipeline_tests.support.alert_sinks import RecordingSink
from billing_pipeline_tests.support.builders import (
    add_ledger_row,
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.processes import production_topology, topology_env
from billing_pipeline_tests.support.stripe import new_customer

UI = "http://dagster.example.test:3000"
ALERT_TIMEOUT = 150.0
QUIET_SECONDS = 40.0  # more than one tick of each sensor after the last alert


@pytest.mark.processes
@pytest.mark.timeout(480)
def test_a_failed_check_and_a_failed_run_each_alert_once_per_sink(
    billing: Billing, dagster_home: Path, dagster_pg_url: str
) -> None:
    day = datetime.now(UTC).date() - timedelta(days=1)
    customer = new_customer(billing.stripe_billing, "Org 1")
    add_organization(billing.engine, 1, customer=customer)
    add_sensor(billing.engine, 1, 1, midnight(day) - timedelta(days=3))
    add_readings(billing.engine, 1, day, 6)
    # A correction that came after Stripe's 35-day window closed: `ledger_expired_rows` warns.
    expired_day = day - timedelta(days=40)
    add_ledger_row(
        billing.engine, 1, "expired", day=expired_day, customer=customer, reason="too late"
    )

    with RecordingSink() as sink:
        env = topology_env(
            billing.database_url,
            dagster_home,
            dagster_pg_url,
            billing.api_base,
            **{
                config.ALERTS_SLACK_WEBHOOK_URL: sink.url("/slack"),
                config.ALERTS_WEBHOOK_URL: sink.url("/webhook"),
                config.DAGSTER_UI_URL: UI + "/",
            },
        )
        with (
            dg.DagsterInstance.from_config(str(dagster_home)) as instance,
            production_topology(dagster_home, env) as topology,
        ):
            partition = {"dagster/partition": day.isoformat()}
            # 1. A run that succeeds, whose checks find the expired row.
            checked = topology.launch("daily_billing", partition)
            assert checked["__typename"] == "LaunchRunSuccess", checked
            checked_id = checked["run"]["runId"]
            run = topology.wait_for_run(instance, checked_id)
            assert run.status == dg.DagsterRunStatus.SUCCESS, topology.logs()
            sink.wait_for(2, ALERT_TIMEOUT)

            # 2. An organization whose Stripe customer does not exist: Stripe refuses its
            # usage (400 No such customer), the rows are failed, the run fails. Launched with
            # no run retry (`dagster/max_retries` 0), so this failure is the last attempt; a run
            # the daemon re-runs alerts only if its last attempt fails (test_production_topology).
            billing.emulator.set_unknown_customer_mode("reject")
            add_organization(billing.engine, 2, customer="cus_gone")
            add_sensor(billing.engine, 2, 2, midnight(day) - timedelta(days=3))
            add_readings(billing.engine, 2, day, 3)
            failed = topology.launch("daily_billing", {**partition, "dagster/max_retries": "0"})
            assert failed["__typename"] == "LaunchRunSuccess", failed
            failed_id = failed["run"]["runId"]
            run = topology.wait_for_run(instance, failed_id)
            assert run.status == dg.DagsterRunStatus.FAILURE, topology.logs()
            sink.wait_for(4, ALERT_TIMEOUT)
            time.sleep(QUIET_SECONDS)  # further ticks must send nothing more
        received = list(sink.received)

    assert sorted(path for path, _ in received) == ["/slack", "/slack", "/webhook", "/webhook"]
    alerts = {body["kind"]: body for path, body in received if path == "/webhook"}
    check_alert, run_alert = alerts["check"], alerts["run"]

    assert check_alert["title"] == "check ledger_expired_rows on stripe/meter_events failed"
    assert check_alert["severity"] == "warning"
    assert check_alert["days"] == [expired_day.isoformat()]
    assert check_alert["customers"] == [customer]
    assert check_alert["organizations"] == ["1"]
    assert check_alert["run_url"] == f"{UI}/runs/{checked_id}"

    assert run_alert["title"] == "run of daily_billing failed"
    assert run_alert["severity"] == "error"
    assert run_alert["days"] == [day.isoformat()]
    assert run_alert["customers"] == ["cus_gone"]
    assert run_alert["run_url"] == f"{UI}/runs/{failed_id}"
    assert "No such customer: 'cus_gone'" in run_alert["details"]
    assert "stripe__meter_events" in run_alert["text"]

    # Slack got the same two alerts in its own payload, the link in the message.
    slack_texts = sorted(body["text"] for path, body in received if path == "/slack")
    assert slack_texts == sorted(
        [
            "[billing warning] check ledger_expired_rows on stripe/meter_events failed "
            f"({UI}/runs/{checked_id})",
            f"[billing error] run of daily_billing failed ({UI}/runs/{failed_id})",
        ]
    )
    with billing.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT alert_key, sink, status, attempts FROM billing.alert_deliveries")
        ).all()
    assert sorted((r.sink, r.status, r.attempts) for r in rows) == [
        ("slack", AlertDeliveryStatus.SENT, 1),
        ("slack", AlertDeliveryStatus.SENT, 1),
        ("webhook", AlertDeliveryStatus.SENT, 1),
        ("webhook", AlertDeliveryStatus.SENT, 1),
    ]
    assert {r.alert_key for r in rows} == {f"run/{failed_id}", check_alert["key"]}
