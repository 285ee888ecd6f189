"""A billing month as production runs it: the real `dagster-daemon`, on a clock the test moves.

The code server, the daemon, the webserver and every run worker run under libfaketime with one
offset the test moves (support/faketime.py), the Stripe emulator's clock moves with them, so the
daemon evaluates `period_close_sensor`, `stripe_webhook_inbox_sensor`,
`daily_billing_schedule` and `trailing_recompute_schedule` at the instants a deployment would,
and Dagster's partition bounds (today is a partition) follow the same clock. Subscriptions
reach Postgres only through the emulator's signed webhooks, the project's receiver and the
daemon's processing runs; the default 1 h finalization grace period applies.

Five subscriptions, backdated a month, end their periods within two days: two on calendar
billing at 00:00 (one boundary instant, so one closing run), one at 12:00, one canceled at
15:20, and one at 00:30 the next day, before the 02:00 run has computed the day before. Every
finalized invoice line must equal the test's own total from the source rows: readings in
[period start, period end), sensors active at the period end.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from billing_pipeline.stripe_reporting.attribution import AFTER_END
from billing_pipeline.stripe_reporting.checks import unbilled_usage, usage_after_invoice_finalized
from billing_pipeline.usage.meters import ACTIVE_SENSORS, TEMPERATURE_READINGS
from billing_pipeline.webhooks.processing import process_open_events
from billing_pipeline_tests.support.billing_month import (
    readings_in,
    receiving_webhooks,
    sensors_active_at,
)
from billing_pipeline_tests.support.builders import add_organization, add_readings_at, add_sensor
from billing_pipeline_tests.support.daemon_clock import (
    daemon_env,
    finished_run,
    linked_subscriptions,
    quiet,
    stop_idle,
    wait_for,
)
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.faketime import FakeClock
from billing_pipeline_tests.support.invoicing import metered_price
from billing_pipeline_tests.support.processes import production_topology
from billing_pipeline_tests.support.stripe import make_client
from billing_pipeline_tests.support.webhooks import inbox_rows
from stripe_emulator.server import StripeEmulator

# The last boundary falls a day before the real date, so Postgres's real `now()` (not moved)
# stays after every fake instant, and the month stays inside Stripe's 35-day window.
D = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
MONTH_START = D - timedelta(days=28)
LONG_AGO = D - timedelta(days=40)
READING_TIMES = [timedelta(hours=h, minutes=m) for h, m in ((0, 10), (0, 20), (1, 10), (9, 10))]
READING_TIMES += [timedelta(hours=h, minutes=10) for h in (13, 15, 20)]


def _received(instance: dg.DagsterInstance) -> int:
    """The events the inbox sensor recorded as stored, over the inbox's materializations."""
    records = instance.fetch_materializations(dg.AssetKey("stripe_webhook_inbox"), limit=1000)
    materializations = [r.asset_materialization for r in records.records]
    return sum(
        int(str(m.metadata["received"].value))
        for m in materializations
        if m is not None and "received" in m.metadata
    )


def _add_readings(
    engine: Engine, sensors: dict[int, tuple[int, datetime, datetime | None]]
) -> None:
    """The readings of the whole month at once, each ingested when recorded."""
    rows = [
        {"sensor": sensor, "at": at}
        for sensor, (_, created, removed) in sensors.items()
        for day in range(31)
        for offset in READING_TIMES
        if created < (at := MONTH_START + timedelta(days=day) + offset) < D + timedelta(days=2)
        and (removed is None or at < removed)
    ]
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO temperature_readings (sensor_id, recorded_at, celsius, ingested_at) "
                "VALUES (:sensor, :at, 4.5, :at)"
            ),
            rows,
        )


@pytest.mark.processes
@pytest.mark.timeout(900)
def test_the_daemon_bills_every_invoice_line_of_the_month_closing_parts_included(
    billing: Billing,
    emulator_server: StripeEmulator,
    dagster_home: Path,
    dagster_pg_url: str,
    tmp_path: Path,
) -> None:
    clock = FakeClock(tmp_path / "faketime", billing.emulator)
    clock.move_to(D - timedelta(days=2) + timedelta(hours=10))
    meters = {m.event_name: m.id for m in billing.stripe_billing.list_meters()}
    client = make_client(billing.api_base)
    readings_price = metered_price(client, meters[TEMPERATURE_READINGS.event_name], "Readings")
    sensors_price = metered_price(client, meters[ACTIVE_SENSORS.event_name], "Active sensors")
    meter_of_price = {readings_price.id: "readings", sensors_price.id: "sensors"}

    # organization: (customer name, how its first period ends)
    calendar: Any = {"day_of_month": D.day, "hour": 0, "minute": 0, "second": 0}
    plans: dict[int, tuple[str, dict[str, Any]]] = {
        1: ("calendar A", {"billing_cycle_anchor_config": calendar}),
        2: ("calendar B", {"billing_cycle_anchor_config": calendar}),
        3: ("noon", {"billing_cycle_anchor": int((D + timedelta(hours=12)).timestamp())}),
        4: (
            "canceled",
            {
                "billing_cycle_anchor": int((D + timedelta(days=10)).timestamp()),
                "cancel_at": int((D + timedelta(hours=15, minutes=20)).timestamp()),
            },
        ),
        5: (
            "half past midnight",
            {"billing_cycle_anchor": int((D + timedelta(days=1, minutes=30)).timestamp())},
        ),
    }
    period_ends = {
        1: D,
        2: D,
        3: D + timedelta(hours=12),
        4: D + timedelta(hours=15, minutes=20),
        5: D + timedelta(days=1, minutes=30),
    }
    # Gauges that change on the last day, so the period's last value is not the midnight one.
    sensors: dict[int, tuple[int, datetime, datetime | None]] = {
        11: (1, LONG_AGO, None),
        12: (1, LONG_AGO, D - timedelta(hours=6)),
        21: (2, LONG_AGO, None),
        31: (3, LONG_AGO, None),
        32: (3, D + timedelta(hours=8), None),
        41: (4, LONG_AGO, None),
        42: (4, LONG_AGO, D + timedelta(hours=14)),
        51: (5, LONG_AGO, None),
        52: (5, D + timedelta(days=1, minutes=5), None),
    }
    for organization in plans:
        add_organization(billing.engine, organization)
    for sensor, (organization, created, removed) in sensors.items():
        add_sensor(billing.engine, sensor, organization, created, removed)
    _add_readings(billing.engine, sensors)

    env = daemon_env(billing, emulator_server.url, dagster_home, dagster_pg_url, clock)
    customers: dict[int, str] = {}
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        production_topology(dagster_home, env) as topology,
        receiving_webhooks(billing, emulator_server.webhook_secret),
    ):
        # The closing runs alone must bill every invoice right; draft verification has its own
        # daemon test (test_draft_invoices_on_the_daemon.py).
        stop_idle(instance, dagster_home / "workspace.yaml", sensors=("draft_invoice_sensor",))
        for organization, (name, anchor) in plans.items():
            customer = client.v1.customers.create({"name": name}).id
            customers[organization] = customer
            params: Any = {
                "customer": customer,
                "items": [{"price": readings_price.id}, {"price": sensors_price.id}],
                "backdate_start_date": int(MONTH_START.timestamp()),
                "metadata": {"organization_id": str(organization)},
                **anchor,
            }
            client.v1.subscriptions.create(params)
        wait_for(
            "the webhook flow links the subscriptions",
            lambda: linked_subscriptions(billing.engine) == 5,
            topology,
        )
        wait_for("quiet", lambda: quiet(instance), topology)
        # The receiver stores events outside Dagster; the daemon's inbox sensor records each
        # batch as a materialization of the inbox, so its history counts every stored event.
        wait_for(
            "the inbox's history shows the events it holds",
            lambda: _received(instance) == len(inbox_rows(billing.engine)),
            topology,
        )

        # Past 02:00 and 03:00: the daily run bills the day before, and the trailing recompute
        # computes the month before the subscriptions appeared and bills it (backdated).
        clock.move_to(D - timedelta(days=1) + timedelta(hours=3, seconds=20))
        yesterday = D - timedelta(days=2)
        daily = {
            "dagster/schedule_name": "daily_billing_schedule",
            "dagster/partition": yesterday.date().isoformat(),
        }
        recompute = {"dagster/run_key": f"recompute-{yesterday.date()}"}
        wait_for("the 02:00 daily run", finished_run(instance, daily), topology)
        wait_for("the 03:00 recompute", finished_run(instance, recompute), topology)
        wait_for("quiet", lambda: quiet(instance), topology)

        for boundary in sorted(set(period_ends.values())):
            clock.move_to(boundary + timedelta(seconds=20))
            closing = {"dagster/run_key": f"period-close-{boundary.isoformat()}"}
            wait_for(f"the closing run of {boundary}", finished_run(instance, closing), topology)
            wait_for("quiet", lambda: quiet(instance), topology)
        # The last invoice finalizes an hour after its period, before the next 02:00 run.
        clock.move_to(max(period_ends.values()) + timedelta(hours=1, minutes=15))
        wait_for("quiet", lambda: quiet(instance), topology)

        runs = instance.get_runs()
        failed = [
            (r.run_id, r.job_name, r.tags) for r in runs if r.status != dg.DagsterRunStatus.SUCCESS
        ]
        assert not failed, f"{failed}\n{topology.logs()}"
        closing_runs = {
            r.tags["dagster/run_key"]: r
            for r in runs
            if r.tags.get("dagster/sensor_name") == "period_close_sensor"
        }

    # One run per boundary instant, launched by the daemon's sensor, not one per subscription.
    assert sorted(closing_runs) == [
        f"period-close-{at.isoformat()}" for at in sorted(set(period_ends.values()))
    ]
    ranges = {
        key: (
            run.tags["dagster/asset_partition_range_start"],
            run.tags["dagster/asset_partition_range_end"],
        )
        for key, run in closing_runs.items()
    }
    last_day = D.date()
    # A midnight end closes the day before; a mid-day end today's partial day; a period ending
    # at 00:30, before the 02:00 run, also the day before, which only partial runs computed.
    assert ranges == {
        f"period-close-{D.isoformat()}": (str(last_day - timedelta(days=1)),) * 2,
        f"period-close-{period_ends[3].isoformat()}": (str(last_day),) * 2,
        f"period-close-{period_ends[4].isoformat()}": (str(last_day),) * 2,
        f"period-close-{period_ends[5].isoformat()}": (
            str(last_day),
            str(last_day + timedelta(days=1)),
        ),
    }

    for organization, customer in customers.items():
        invoices: list[Any] = [
            invoice
            for invoice in client.v1.invoices.list(
                {"customer": customer, "limit": 100}
            ).auto_paging_iter()
            if invoice.status in ("open", "paid")
        ]
        end = period_ends[organization]
        assert [(invoice.period_start, invoice.period_end) for invoice in invoices] == [
            (int(MONTH_START.timestamp()), int(end.timestamp()))
        ], organization
        billed = {
            meter_of_price[line.pricing.price_details.price]: line.quantity
            for line in invoices[0].lines.data
        }
        expected = {
            "readings": readings_in(billing.engine, organization, MONTH_START, end),
            "sensors": sensors_active_at(billing.engine, organization, end),
        }
        assert billed == expected, (organization, plans[organization][0])
    # The closing parts are not empty: readings after the last midnight, gauges that changed.
    assert readings_in(billing.engine, 5, D + timedelta(days=1), period_ends[5]) == 4
    assert sensors_active_at(billing.engine, 5, period_ends[5]) == 2
    assert sensors_active_at(billing.engine, 3, period_ends[3]) == 2

    # The checks over the finalized month: every line agrees with the source, and the canceled
    # subscription's usage after its end is on no invoice but listed as unbilled.
    process_open_events(billing.engine)
    checks = [unbilled_usage, usage_after_invoice_finalized]
    evaluations = _evaluate(billing, checks)
    assert evaluations["usage_after_invoice_finalized"].passed
    assert readings_in(billing.engine, 4, period_ends[4], D + timedelta(days=1)) > 0
    unbilled = str(evaluations["unbilled_usage"].metadata["details"].value)
    assert AFTER_END in unbilled and "| 4 |" in unbilled

    # A reading that arrives after the calendar month was finalized is on no invoice: once its
    # day is recomputed, the invoice check names the customer, the meter and the unit.
    late = D - timedelta(hours=3)
    add_readings_at(billing.engine, 11, [late])
    billing.materialize_day(late.date())
    evaluation = _evaluate(billing, [usage_after_invoice_finalized])[
        "usage_after_invoice_finalized"
    ]
    assert not evaluation.passed
    assert evaluation.metadata["units_missing"].value == 1
    details = str(evaluation.metadata["details"].value)
    assert customers[1] in details and "temperature_readings" in details


def _evaluate(
    billing: Billing, checks: list[dg.AssetChecksDefinition]
) -> dict[str, dg.AssetCheckEvaluation]:
    """The checks alone, as the `stripe_reconciliation` job runs them (on the real clock)."""
    result = dg.materialize(
        checks,
        instance=billing.instance,
        resources=billing.resources(),
        selection=dg.AssetSelection.checks(*checks),
        raise_on_error=False,
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}
