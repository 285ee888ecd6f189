"""Each customer's bill so far: the command and the asset against the test's own totals.

A real subscription in the emulator (backdated, metered prices on the project's meters) reaches
the pipeline as the emulator's signed webhooks into the project's receiver; the real usage and
reporting assets send the first days; a late day's usage is computed and its ledger row left
pending (planned, not yet delivered). The bill so far must then show the source (this file's
SQL over the readings and sensors), the ledger and Stripe's invoice preview apart, with the
difference named, and the expected amount from the price in integer cents.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from dagster._record import copy
from dagster._scheduler.scheduler import launch_scheduled_runs
from sqlalchemy import Engine, text

from billing_pipeline import config
from billing_pipeline.cli import main
from billing_pipeline.definitions import defs
from billing_pipeline.stripe_reporting.bill_so_far_assets import BILL_SO_FAR_KEY, bill_so_far_asset
from billing_pipeline.stripe_reporting.status_assets import STATUS_KEY
from billing_pipeline.usage.assets import build_usage_assets
from billing_pipeline.webhooks.processing import process_open_events
from billing_pipeline_tests.support.billing_month import (
    readings_in,
    receiving_webhooks,
    sensors_active_at,
    subscription_period,
)
from billing_pipeline_tests.support.builders import (
    add_ledger_row,
    add_organization,
    add_readings,
    add_sensor,
)
from billing_pipeline_tests.support.dagster_runs import Billing, daemon_workspace
from billing_pipeline_tests.support.invoicing import metered_price
from billing_pipeline_tests.support.reporting import (
    days_before,
    ledger_statuses,
    run_days,
)
from billing_pipeline_tests.support.stripe import TEST_KEY, make_client
from stripe_emulator.server import StripeEmulator

READINGS_CENTS, SENSORS_CENTS = 3, 150  # per reading, per active sensor
SENT_DAYS = [days_before(n) for n in (5, 4, 3)]
LATE_DAY = days_before(2)  # planned while Stripe is unreachable: pending in the ledger
ORGANIZATION = 7
USAGE_ASSETS = build_usage_assets()


@dataclass(frozen=True)
class Subscribed:
    customer: str
    subscription: str
    period: tuple[datetime, datetime]


def _linked(engine: Engine, subscription: str) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text(
                    "SELECT count(*) FROM subscriptions s JOIN billing.subscription_prices p "
                    "ON p.stripe_subscription_id = s.stripe_subscription_id "
                    "WHERE s.stripe_subscription_id = :s AND s.status = 'active'"
                ),
                {"s": subscription},
            ).scalar_one()
        )


class Subscriber:
    """Subscribes organizations of the test to backdated subscriptions in the emulator pricing
    both meters, linked by the emulator's webhooks through the project's receiver."""

    def __init__(self, billing: Billing, emulator_server: StripeEmulator) -> None:
        self.billing, self.emulator_server = billing, emulator_server
        self.client = make_client(emulator_server.url)
        meters = {m.event_name: m.id for m in billing.stripe_billing.list_meters()}
        self.prices = [
            metered_price(self.client, meters["temperature_readings"], "Readings", unit_amount=3),
            metered_price(self.client, meters["active_sensors"], "Sensors", unit_amount=150),
        ]
        assert [p.unit_amount for p in self.prices] == [READINGS_CENTS, SENSORS_CENTS]

    def subscribe(self, organization: int, name: str) -> Subscribed:
        """The organization with two sensors on its own customer and subscription."""
        billing, client = self.billing, self.client
        add_organization(billing.engine, organization)
        for sensor in (organization * 10, organization * 10 + 1):
            add_sensor(billing.engine, sensor, organization, datetime(2024, 1, 1, tzinfo=UTC))
        start = datetime.combine(SENT_DAYS[0], datetime.min.time(), tzinfo=UTC)
        anchor = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=5)
        with receiving_webhooks(billing, self.emulator_server.webhook_secret):
            customer = client.v1.customers.create({"name": name}).id
            params: Any = {
                "customer": customer,
                "items": [{"price": price.id} for price in self.prices],
                "backdate_start_date": int(start.timestamp()),
                "billing_cycle_anchor": int(anchor.timestamp()),
                "metadata": {"organization_id": str(organization)},
            }
            subscription = client.v1.subscriptions.create(params)
            for _ in range(200):
                process_open_events(billing.engine)
                if _linked(billing.engine, subscription.id):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the webhook flow never linked the subscription")
        return Subscribed(customer, subscription.id, subscription_period(subscription))


@pytest.fixture
def subscriber(billing: Billing, emulator_server: StripeEmulator) -> Subscriber:
    return Subscriber(billing, emulator_server)


@pytest.fixture
def subscribed(subscriber: Subscriber) -> Subscribed:
    """Organization 7 on a backdated subscription pricing both meters."""
    return subscriber.subscribe(ORGANIZATION, "So Far Co")


def _deliver_all_but_the_late_day(billing: Billing, customer: str) -> None:
    for organization in _organizations(billing.engine):
        late_days = [LATE_DAY] if organization == ORGANIZATION else []
        for day in [*SENT_DAYS, *late_days]:
            add_readings(billing.engine, organization * 10, day, 4)
            add_readings(billing.engine, organization * 10 + 1, day, 2)
    first, last = SENT_DAYS[0], SENT_DAYS[-1]
    assert run_days(billing.instance, billing.database_url, billing.api_base, first, last).success
    # The late day's usage is computed and its row planned, not yet delivered: pending, as a
    # run leaves it when it stops between planning and sending.
    usage = run_days(
        billing.instance, billing.database_url, billing.api_base, LATE_DAY, assets=USAGE_ASSETS
    )
    assert usage.success
    late = readings_on(billing.engine, LATE_DAY)
    add_ledger_row(
        billing.engine,
        ORGANIZATION,
        "pending",
        day=LATE_DAY,
        value=late,
        customer=customer,
    )
    sent = 2 * len(SENT_DAYS) * len(_organizations(billing.engine))  # two meters a day
    assert ledger_statuses(billing.engine) == {"sent": sent, "pending": 1}


def _organizations(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT id FROM organizations ORDER BY id")).scalars())


def readings_on(engine: Engine, day: date) -> int:
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return readings_in(engine, ORGANIZATION, start, start + timedelta(days=1))


def _expected(billing: Billing, subscribed: Subscribed) -> dict[str, dict[str, int]]:
    """The test's own totals: source over the ended days of the period, Stripe over the days
    delivered, from the readings and sensors rows."""
    start = subscribed.period[0]
    late_end = datetime.combine(LATE_DAY + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    sent_end = late_end - timedelta(days=1)
    source = readings_in(billing.engine, ORGANIZATION, start, late_end)
    delivered = readings_in(billing.engine, ORGANIZATION, start, sent_end)
    sensors = sensors_active_at(billing.engine, ORGANIZATION, late_end - timedelta(seconds=1))
    return {
        "temperature_readings": {"source": source, "stripe": delivered},
        "active_sensors": {"source": sensors, "stripe": sensors},
    }


def test_the_command_shows_source_ledger_and_preview_apart_while_a_row_is_pending(
    billing: Billing,
    subscribed: Subscribed,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _deliver_all_but_the_late_day(billing, subscribed.customer)
    expected = _expected(billing, subscribed)
    readings = expected["temperature_readings"]
    assert readings["source"] == 6 * 4 and readings["stripe"] == 6 * 3  # the data set itself
    monkeypatch.setenv(config.DATABASE_URL, billing.database_url)
    monkeypatch.setenv(config.STRIPE_SECRET_KEY, TEST_KEY)
    monkeypatch.setenv(config.STRIPE_API_BASE, billing.api_base)

    assert main(["stripe", "bill-so-far", "--customer", subscribed.customer]) == 0

    out = capsys.readouterr().out
    rows = {line.split()[2]: line.split() for line in out.splitlines() if line.startswith("cus_")}
    # customer, subscription, meter, period start (2 words), end (2), source, ledger, rows,
    # preview, expected (2: amount and currency), Stripe amount (2), note…
    cut = rows["temperature_readings"]
    assert cut[:3] == [subscribed.customer, subscribed.subscription, "temperature_readings"]
    assert [int(x) for x in cut[7:11]] == [
        readings["source"],
        readings["stripe"],  # the ledger holds the delivered days
        1,  # the late day's row, pending
        readings["stripe"],  # Stripe's preview
    ]
    assert cut[11:15] == [
        f"{readings['source'] * READINGS_CENTS / 100:.2f}",
        "USD",
        f"{readings['stripe'] * READINGS_CENTS / 100:.2f}",
        "USD",
    ]
    assert (
        f"ledger {readings['stripe']} ≠ source {readings['source']}, 1 ledger rows not "
        "delivered yet" in out
    )
    assert f"Stripe preview {readings['stripe']} ≠ source {readings['source']}" in out
    sensors = expected["active_sensors"]["source"]
    gauge = rows["active_sensors"]
    assert [int(x) for x in gauge[7:11]] == [sensors, sensors, 0, sensors]
    assert gauge[-1] == "agrees"  # the gauge's pending day repeats the value Stripe holds
    assert "Stripe previews: 1" in out


def test_the_asset_tables_the_same_numbers_with_plottable_totals_and_a_preview_cap(
    billing: Billing, subscribed: Subscribed
) -> None:
    _deliver_all_but_the_late_day(billing, subscribed.customer)
    expected = _expected(billing, subscribed)
    readings = expected["temperature_readings"]

    result = dg.materialize(
        [bill_so_far_asset], instance=billing.instance, resources=billing.resources()
    )
    [report] = result.asset_materializations_for_node("billing__bill_so_far")
    metadata = report.metadata
    assert metadata["source/temperature_readings"].value == readings["source"]
    assert metadata["ledger/temperature_readings"].value == readings["stripe"]
    assert metadata["stripe_preview/temperature_readings"].value == readings["stripe"]
    assert metadata["undelivered_rows/temperature_readings"].value == 1
    assert metadata["expected_cents/temperature_readings"].value == (
        readings["source"] * READINGS_CENTS
    )
    assert (
        metadata["stripe_cents/temperature_readings"].value == readings["stripe"] * READINGS_CENTS
    )
    sensors = expected["active_sensors"]["source"]
    assert metadata["expected_cents/active_sensors"].value == sensors * SENSORS_CENTS
    assert metadata["stripe_previews"].value == 1
    assert metadata["not_previewed"].value == 0
    table = metadata["bill_so_far"].value
    assert isinstance(table, dg.TableMetadataValue)
    by_meter = {record.data["meter"]: record.data for record in table.records}
    assert by_meter["temperature_readings"]["source"] == readings["source"]
    assert by_meter["temperature_readings"]["stripe_preview"] == readings["stripe"]

    # With no preview allowed, Stripe is not asked and the metadata says who was left out.
    capped = dg.materialize(
        [bill_so_far_asset],
        instance=billing.instance,
        resources=billing.resources(),
        run_config={"ops": {"billing__bill_so_far": {"config": {"max_previews": 0}}}},
    )
    [report] = capped.asset_materializations_for_node("billing__bill_so_far")
    assert report.metadata["stripe_previews"].value == 0
    assert report.metadata["not_previewed"].value == 1
    assert report.metadata["not_previewed_subscriptions"].value == subscribed.subscription
    assert report.metadata["source/temperature_readings"].value == readings["source"]


def test_the_status_schedule_refreshes_the_bill_so_far_on_the_schedulers_loop(
    synchronous_instance: dg.DagsterInstance, billing: Billing, subscribed: Subscribed
) -> None:
    """The scheduler daemon's own iteration (`launch_scheduled_runs`) over the next :00 or :30
    tick of `billing_status_schedule` launches one run that materializes both assets. Nobody
    switches the schedule on: it runs by default, from the scheduler's first iteration."""
    _deliver_all_but_the_late_day(billing, subscribed.customer)
    readings = _expected(billing, subscribed)["temperature_readings"]
    definitions = copy(
        defs,
        resources={**(defs.resources or {}), **billing.resources()},
        executor=dg.in_process_executor,
    )
    with daemon_workspace(synchronous_instance, definitions) as workspace:
        now = datetime.now(UTC)
        tick = now.replace(minute=30 if now.minute < 30 else 0, second=0, microsecond=0)
        if now.minute >= 30:
            tick += timedelta(hours=1)
        logger = logging.getLogger("scheduler")
        # Only this schedule ticks: the others on by default (02:00 billing, 03:00 recompute)
        # would bill the day this test leaves undelivered if their tick fell in the window.
        location = workspace.create_request_context().get_code_location("billing_pipeline")
        for other in location.get_repository("__repository__").get_schedules():
            if other.name != "billing_status_schedule":
                synchronous_instance.stop_schedule(
                    other.get_remote_origin_id(), other.selector_id, other
                )
        # The first iteration records the running-by-default schedule as starting now.
        list(launch_scheduled_runs(workspace, logger, now, {}))
        list(launch_scheduled_runs(workspace, logger, tick + timedelta(seconds=5), {}))

    [run] = synchronous_instance.get_runs()
    assert run.tags["dagster/schedule_name"] == "billing_status_schedule"
    assert run.status == dg.DagsterRunStatus.SUCCESS
    for key in (STATUS_KEY, BILL_SO_FAR_KEY):
        event = synchronous_instance.get_latest_materialization_event(key)
        assert event is not None and event.run_id == run.run_id, key
    latest = synchronous_instance.get_latest_materialization_event(BILL_SO_FAR_KEY)
    assert latest is not None and latest.asset_materialization is not None
    metadata = latest.asset_materialization.metadata
    assert metadata["source/temperature_readings"].value == readings["source"]
    assert metadata["stripe_preview/temperature_readings"].value == readings["stripe"]


def test_the_preview_cap_asks_first_about_the_subscriptions_that_disagree(
    billing: Billing,
    subscriber: Subscriber,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Organization 7 has a pending row; organization 8 is fully delivered. With one preview
    allowed, Stripe is asked about 7, whichever id sorts first, and 8 is named as not
    previewed."""
    late = subscriber.subscribe(ORGANIZATION, "Late Co")
    delivered = subscriber.subscribe(8, "Delivered Co")
    _deliver_all_but_the_late_day(billing, late.customer)  # organization 8 has no late day
    monkeypatch.setenv(config.DATABASE_URL, billing.database_url)
    monkeypatch.setenv(config.STRIPE_SECRET_KEY, TEST_KEY)
    monkeypatch.setenv(config.STRIPE_API_BASE, billing.api_base)

    assert main(["stripe", "bill-so-far", "--max-previews", "1"]) == 0

    out = capsys.readouterr().out
    assert "Stripe previews: 1" in out
    assert f"not previewed: {delivered.subscription}" in out
    rows = {
        (line.split()[1], line.split()[2]): line
        for line in out.splitlines()
        if line.startswith("cus_")
    }
    assert (
        "not previewed (at most 1 previews a run)"
        in rows[(delivered.subscription, "temperature_readings")]
    )
    source = readings_in(billing.engine, 8, late.period[0], late.period[0] + timedelta(days=3))
    assert rows[(delivered.subscription, "temperature_readings")].split()[7:9] == [
        str(source),
        str(source),
    ]
    assert (
        f"Stripe preview {source} ≠ source {source + 6}"
        in rows[(late.subscription, "temperature_readings")]
    )
