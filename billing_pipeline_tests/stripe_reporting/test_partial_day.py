"""Today's partition, still in progress: what a period-close run during the day reports.

A billing period ends earlier today. A run of today's partition (what `period_close_sensor`
launches, or an operator by hand) computes today's usage so far and reports the part before the
period end only; the part still going on is neither sent nor counted as owed by the status, as
drift by the reconciliation, or as unbilled by `unbilled_usage`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from billing_pipeline.stripe_reporting.checks import unbilled_usage
from billing_pipeline.stripe_reporting.reconciliation import reconcile
from billing_pipeline.stripe_reporting.status import billing_status
from billing_pipeline.usage.meters import METERS
from billing_pipeline_tests.support.builders import add_organization, add_sensor, midnight
from billing_pipeline_tests.support.dagster_runs import Billing, evaluate_checks
from billing_pipeline_tests.support.stripe import new_customer


def test_a_run_during_the_day_reports_only_the_parts_that_have_ended(billing: Billing) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    start = midnight(today)
    # The period ended halfway through the day so far; nine readings spread over the day so far.
    period_end = start + (now - start) / 2
    readings = [start + (now - start) * k / 10 for k in range(1, 10)]
    customer = new_customer(billing.stripe_billing, "Alpha")
    add_organization(billing.engine, 1, customer=customer)
    add_sensor(billing.engine, 11, 1, start - timedelta(days=10))
    add_organization(billing.engine, 2)  # the free tier: its day is not over, so not yet unbilled
    add_sensor(billing.engine, 21, 2, start - timedelta(days=10))
    with billing.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO billing.billing_periods "
                "(stripe_subscription_id, period_start, period_end) VALUES (:s, :start, :end)"
            ),
            {"s": f"sub_{customer}", "start": start - timedelta(days=30), "end": period_end},
        )
        connection.execute(
            text(
                "INSERT INTO temperature_readings (sensor_id, recorded_at, celsius, ingested_at) "
                "VALUES (:sensor, :at, 4.5, :at)"
            ),
            [{"at": at, "sensor": sensor} for at in readings for sensor in (11, 21)],
        )

    assert billing.materialize_day(today).success

    before_end = sum(1 for at in readings if at < period_end)
    sent = {
        (e["event_name"], datetime.fromtimestamp(e["timestamp"], UTC) < period_end): e["value"]
        for e in billing.emulator.meter_events()
    }
    # The closing part only, stamped before the period end: the rest of today is not over.
    assert sent == {("temperature_readings", True): before_end, ("active_sensors", True): 1}
    [status_readings] = [
        line
        for line in billing_status(billing.engine, METERS, today, today + timedelta(days=1))
        if line.meter == "temperature_readings"
    ]
    assert (status_readings.usage, status_readings.billed) == (before_end, before_end)
    assert status_readings.problems() == []
    outcome = reconcile(
        billing.engine, billing.stripe_billing, METERS, today, today + timedelta(days=1)
    )[today]
    assert outcome.ok and outcome.compared == 2
    unbilled = evaluate_checks(billing.instance, billing.database_url, [unbilled_usage])
    assert unbilled["unbilled_usage"].metadata["rows"].value == 0
