"""Draft invoices verified by the real `dagster-daemon` during Stripe's grace period.

As in test_billing_month_on_the_daemon.py, the code server, the daemon, the webserver and their
run workers run on a clock the test moves (support/faketime.py), the emulator's clock with them,
and subscriptions and invoices reach Postgres only through the emulator's signed webhooks.

Two customers' periods end at 12:00 with the default 1 h grace period. The daemon's
`draft_invoice_sensor` looks at each draft as soon as the webhook flow records it and again 15
minutes before finalization. A reading of the first customer that arrives after the period
ended (a gateway back online) is on no run's way before the 02:00 run, after finalization: the
last look delivers it, and the finalized invoice equals the source. The second customer's meter
holds 5 units nobody in the pipeline sent (a manual entry): the ledger cannot take them back, so
at the last look the line is recorded as unfixable and the check fails naming it, once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import text

from billing_pipeline.stripe_reporting.assets import REPORTING_KEY
from billing_pipeline.stripe_reporting.draft_invoices import ATTEMPT_TAG, DRAFT_TAG, LAST_LOOK
from billing_pipeline.usage.meters import ACTIVE_SENSORS, TEMPERATURE_READINGS
from billing_pipeline_tests.support.billing_month import (
    readings_in,
    receiving_webhooks,
    sensors_active_at,
)
from billing_pipeline_tests.support.builders import add_organization, add_readings_at, add_sensor
from billing_pipeline_tests.support.daemon_clock import (
    daemon_env,
    linked_subscriptions,
    settled,
    stop_idle,
    wait_for,
)
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.faketime import FakeClock
from billing_pipeline_tests.support.invoicing import metered_price
from billing_pipeline_tests.support.processes import production_topology
from billing_pipeline_tests.support.reporting import stripe_value
from billing_pipeline_tests.support.stripe import make_client
from stripe_emulator.server import StripeEmulator

# Before the real date, so Postgres's real `now()` stays after every fake instant.
D = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
START = D - timedelta(days=28)
PERIOD_END = D + timedelta(hours=12)
FINALIZES_AT = PERIOD_END + timedelta(hours=1)
MANUAL_UNITS = 5


def _looks_finished(instance: dg.DagsterInstance, attempt: int) -> bool:
    """Both drafts' runs of this look were launched and finished."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={ATTEMPT_TAG: str(attempt)}))
    return len(runs) == 2 and all(run.is_finished for run in runs)


@pytest.mark.processes
@pytest.mark.timeout(900)
def test_the_daemon_makes_a_short_draft_right_and_names_the_line_it_cannot(
    billing: Billing,
    emulator_server: StripeEmulator,
    dagster_home: Path,
    dagster_pg_url: str,
    tmp_path: Path,
) -> None:
    clock = FakeClock(tmp_path / "faketime", billing.emulator)
    clock.move_to(D + timedelta(hours=11))
    meters = {m.event_name: m.id for m in billing.stripe_billing.list_meters()}
    client = make_client(billing.api_base)
    readings = metered_price(client, meters[TEMPERATURE_READINGS.event_name], "Readings")
    sensors = metered_price(client, meters[ACTIVE_SENSORS.event_name], "Active sensors")
    for organization in (1, 2):
        add_organization(billing.engine, organization)
        add_sensor(billing.engine, organization * 10, organization, START - timedelta(days=3))
        add_readings_at(
            billing.engine,
            organization * 10,
            [START + timedelta(days=day, hours=hour) for day in range(29) for hour in (1, 9)],
        )
    customers: dict[int, str] = {}
    env = daemon_env(billing, emulator_server.url, dagster_home, dagster_pg_url, clock)
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        production_topology(dagster_home, env) as topology,
        receiving_webhooks(billing, emulator_server.webhook_secret),
    ):
        # The first look sends the closing part too; without the closing and late-data runs the
        # daemon launches fewer runs, and what reaches the invoices is the looks' doing.
        stop_idle(
            instance,
            dagster_home / "workspace.yaml",
            sensors=("period_close_sensor", "late_readings_sensor"),
        )
        for organization in (1, 2):
            customers[organization] = client.v1.customers.create({"name": f"{organization}"}).id
            params: Any = {
                "customer": customers[organization],
                "items": [{"price": readings.id}, {"price": sensors.id}],
                "backdate_start_date": int(START.timestamp()),
                "billing_cycle_anchor": int(PERIOD_END.timestamp()),
                "metadata": {"organization_id": str(organization)},
            }
            client.v1.subscriptions.create(params)
        # Units in the second customer's period that the ledger knows nothing of.
        billing.stripe_billing.send_meter_event(
            event_name=TEMPERATURE_READINGS.event_name,
            customer=customers[2],
            value=MANUAL_UNITS,
            identifier="manual-entry-1",
            timestamp=D - timedelta(days=3, hours=-5),
        )
        wait_for(
            "the subscriptions linked", lambda: linked_subscriptions(billing.engine) == 2, topology
        )
        wait_for("settled", lambda: settled(instance, billing.engine), topology)

        # The periods end: the drafts appear, and each gets its first look.
        clock.move_to(PERIOD_END + timedelta(seconds=20))
        wait_for("the first looks", lambda: _looks_finished(instance, 1), topology)
        wait_for("settled", lambda: settled(instance, billing.engine), topology)
        # A reading from before the period end arrives now: Stripe's draft is one unit short.
        add_readings_at(billing.engine, 10, [PERIOD_END - timedelta(minutes=30)])
        expected_readings = readings_in(billing.engine, 1, START, PERIOD_END)
        held = stripe_value(
            billing.stripe_billing,
            TEMPERATURE_READINGS.event_name,
            customers[1],
            START,
            PERIOD_END,
        )
        assert held == expected_readings - 1

        # The last look, 15 minutes before Stripe finalizes the drafts.
        clock.move_to(FINALIZES_AT - LAST_LOOK + timedelta(seconds=20))
        wait_for("the last looks", lambda: _looks_finished(instance, 2), topology)
        wait_for("settled", lambda: settled(instance, billing.engine), topology)
        clock.move_to(FINALIZES_AT + timedelta(minutes=1))
        wait_for("settled", lambda: settled(instance, billing.engine), topology)

        runs = instance.get_runs()
        failed = [(r.run_id, r.job_name) for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
        assert not failed, f"{failed}\n{topology.logs()}"
        looks = sorted(
            (r.tags[DRAFT_TAG], r.tags["dagster/run_key"])
            for r in runs
            if r.job_name == "verify_draft_invoice"
        )
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(REPORTING_KEY, "draft_invoices_verified"), limit=100
        )

    invoices: dict[int, list[Any]] = {
        organization: [
            invoice
            for invoice in client.v1.invoices.list({"customer": customer}).auto_paging_iter()
            if invoice.status in ("open", "paid")
        ]
        for organization, customer in customers.items()
    }
    # Two looks per draft, launched by the daemon's sensor with deterministic keys.
    drafts = {organization: invoices[organization][0].id for organization in customers}
    assert looks == sorted(
        (invoice, f"draft-{invoice}-{attempt}") for invoice in drafts.values() for attempt in (1, 2)
    )
    # The first customer's finalized invoice equals the source, late reading included.
    [first] = invoices[1]
    billed = {line.pricing.price_details.price: line.quantity for line in first.lines.data}
    assert billed == {
        readings.id: expected_readings,
        sensors.id: sensors_active_at(billing.engine, 1, PERIOD_END),
    }
    # The second customer's readings line could not be made right: the check failed once,
    # naming the customer, the invoice, the line, what the source says and what Stripe held.
    expected_second = readings_in(billing.engine, 2, START, PERIOD_END)
    evaluations = [
        r.evaluation for r in history if isinstance(r.evaluation, dg.AssetCheckEvaluation)
    ]
    assert len(evaluations) == len(looks)
    failures = [evaluation for evaluation in evaluations if not evaluation.passed]
    assert len(failures) == 1, evaluations
    description = str(failures[0].description)
    assert f"customer {customers[2]}: invoice {drafts[2]} line 1 (temperature_readings" in (
        description
    )
    assert f"expected {expected_second}, Stripe holds {expected_second + MANUAL_UNITS}" in (
        description
    )
    with billing.engine.connect() as connection:
        recorded = connection.execute(
            text(
                "SELECT stripe_customer_id, invoice_id, line, expected, held "
                "FROM billing.unfixable_draft_lines"
            )
        ).all()
    assert [tuple(row) for row in recorded] == [
        (customers[2], drafts[2], 1, expected_second, expected_second + MANUAL_UNITS)
    ]
