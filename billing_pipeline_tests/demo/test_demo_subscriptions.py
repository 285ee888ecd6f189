"""The demo's paying organizations get real subscriptions in Stripe (the emulator), and
`subscriptions` is filled by the webhook flow from Stripe's own events; an operator reads the
invoices with `billing-pipeline stripe invoices`. Driven through the command line and HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from billing_demo.subscriptions import UNIT_AMOUNT_DECIMAL, create_demo_subscriptions
from billing_pipeline import cli as main_cli
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.usage.meters import METERS
from billing_pipeline.webhooks.app import create_app
from billing_pipeline.webhooks.processing import process_open_events
from billing_pipeline_tests.support.builders import add_organization
from billing_pipeline_tests.support.stripe import TEST_KEY
from billing_pipeline_tests.support.webhooks import inbox_rows, serve
from stripe_emulator import EmulatorControl, StripeEmulator

SEED = [
    "seed",
    "--organizations=4",
    "--days=3",
    "--sensors-per-org=1",
    "--readings-per-sensor-per-day=2",
    "--paid-fraction=0.75",
    "--replace",
]
GRACE = 3600


@dataclass
class Demo:
    """The seeded demo with its Stripe (the emulator) delivering to the webhook receiver."""

    engine: Engine
    stripe: StripeBilling
    control: EmulatorControl
    run: Callable[..., str]

    def apply_events(self) -> None:
        """Wait until the receiver stored every event Stripe lists, then apply them as the
        processing job does."""
        events = self.stripe.client.v1.events.list({"limit": 100}).auto_paging_iter()
        count = sum(1 for _ in events)
        deadline = time.monotonic() + 10
        while len(inbox_rows(self.engine)) < count:
            assert time.monotonic() < deadline, "the emulator's events did not arrive"
            time.sleep(0.05)
        process_open_events(self.engine, stripe=self.stripe)

    def rows(self) -> dict[int, dict[str, Any]]:
        with self.engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM subscriptions")).mappings().all()
        return {row["organization_id"]: dict(row) for row in rows}


@pytest.fixture
def demo(
    engine: Engine,
    database_url: str,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Demo]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", emulator_server.url)

    def run(*argv: str) -> str:
        capsys.readouterr()
        code = main_cli.main(list(argv))
        captured = capsys.readouterr()
        assert code == 0, captured.out + captured.err
        return captured.out

    run(*SEED)
    with serve(create_app(database_url, [emulator_server.webhook_secret])) as receiver:
        emulator_control.set_webhook_endpoint(f"{receiver}/webhooks/stripe")
        yield Demo(engine, StripeBilling(TEST_KEY, emulator_server.url), emulator_control, run)
        emulator_control.set_webhook_endpoint(None)


def next_calendar_start(after: datetime) -> datetime:
    first = after.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def test_paying_organizations_are_subscribed_in_stripe_and_linked_by_its_events(
    demo: Demo,
) -> None:
    seeded = demo.rows()
    assert len(seeded) == 3 and all(r["stripe_subscription_id"] is None for r in seeded.values())
    now = datetime.fromtimestamp(demo.control.now(), UTC)

    assert "demo subscriptions created: 3; already in Stripe: 0" in demo.run(
        "stripe", "demo-subscriptions"
    )
    # Nothing is written by the command: the rows wait for Stripe's events.
    assert demo.rows() == seeded
    demo.apply_events()

    rows = demo.rows()
    client = demo.stripe.client
    meter_ids = {m.id for m in client.v1.billing.meters.list().data}
    for organization, row in rows.items():
        subscription = client.v1.subscriptions.retrieve(row["stripe_subscription_id"])
        assert subscription.metadata["organization_id"] == str(organization)
        assert row["stripe_customer_id"] == subscription.customer
        assert row["status"] == "active"
        # Backdated to the seeded start, so every seeded day is billable.
        assert row["started_at"] == seeded[organization]["started_at"]
        assert subscription.start_date == int(row["started_at"].timestamp())
        item_meters = {item.price.recurring.meter for item in subscription["items"].data}
        assert item_meters == meter_ids and len(meter_ids) == len(METERS)
        assert row["current_period_start"] == row["started_at"]
        assert row["current_period_end"] > now
    calendar, *midday = sorted(rows)
    assert rows[calendar]["current_period_end"] == next_calendar_start(now)
    for organization in midday:
        end = rows[organization]["current_period_end"]
        assert (end.hour, end.minute, end.second) == (12, 0, 0)
        assert end - now <= timedelta(days=31)

    # A restart finds them all in Stripe and subscribes nobody twice.
    assert "created: 0; already in Stripe: 3" in demo.run("stripe", "demo-subscriptions")
    assert len(client.v1.subscriptions.list().data) == 3


def test_an_operator_reads_each_invoice_line_once_the_period_ended(demo: Demo) -> None:
    demo.run("stripe", "demo-subscriptions")
    demo.apply_events()
    calendar = min(demo.rows().items())[1]
    customer = calendar["stripe_customer_id"]
    yesterday = datetime.fromtimestamp(demo.control.now(), UTC) - timedelta(days=1)
    sent = {"active_sensors": 3, "temperature_readings": 1234}
    for declared in METERS:
        demo.stripe.send_meter_event(
            event_name=declared.event_name,
            customer=customer,
            value=sent[declared.name],
            identifier=f"test-{declared.name}",
            timestamp=yesterday,
        )
    assert "no invoices" in demo.run("stripe", "invoices", "--customer", customer)

    period_end = calendar["current_period_end"]
    demo.control.set_clock(period_end.timestamp() + GRACE + 60)
    [invoice] = demo.stripe.client.v1.invoices.list({"customer": customer}).data
    assert (invoice.status, invoice.period_end) == ("paid", int(period_end.timestamp()))
    assert invoice.period_start == int(calendar["started_at"].timestamp())

    printed = demo.run("stripe", "invoices", "--customer", customer)
    lines = printed.splitlines()
    names = {m.name: m.display_name for m in METERS}
    expected_total = 0
    for meter, quantity in sent.items():
        amount = int(
            (quantity * Decimal(UNIT_AMOUNT_DECIMAL[meter])).quantize(
                Decimal(1), rounding=ROUND_HALF_UP
            )
        )
        expected_total += amount
        [line] = [line for line in lines if f" {names[meter]} " in line]
        assert f"{invoice.number} " in line and f" {customer} " in line and " paid " in line
        assert line.split()[-3:] == [str(quantity), f"{Decimal(amount).scaleb(-2):.2f}", "USD"]
    assert invoice.total == expected_total
    [total] = [line for line in lines if " total " in line]
    assert total.split()[-2:] == [f"{Decimal(expected_total).scaleb(-2):.2f}", "USD"]

    # The renewal reaches `subscriptions` through the webhook flow too.
    demo.apply_events()
    renewed = min(demo.rows().items())[1]
    assert renewed["current_period_start"] == period_end


def test_a_restarted_emulator_subscribes_nobody_twice(engine: Engine, tmp_path: Path) -> None:
    """Without the webhook flow linking the rows, a second run replays Stripe's answers
    (idempotency keys) instead of subscribing anyone again; made-up ids of an older seed are
    forgotten and subscribed anew."""
    add_organization(engine, 1)
    add_organization(engine, 2, customer="cus_older_seed")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscriptions (organization_id, started_at) "
                "VALUES (1, now() - interval '20 days')"
            )
        )
        connection.execute(
            text("UPDATE subscriptions SET started_at = now() - interval '9 days' WHERE id > 1")
        )
    state_file = tmp_path / "stripe_emulator.json"
    with StripeEmulator(state_file=state_file) as emulator:
        billing = StripeBilling(TEST_KEY, emulator.url)
        for meter in METERS:
            billing.create_meter(meter)
        first = create_demo_subscriptions(engine, billing, list(METERS))
    with engine.connect() as connection:
        unlinked = connection.execute(
            text("SELECT count(*) FROM subscriptions WHERE stripe_subscription_id IS NULL")
        ).scalar()
    assert unlinked == 2  # the older seed's made-up ids are gone; the events will link both

    with StripeEmulator(state_file=state_file) as emulator:
        billing = StripeBilling(TEST_KEY, emulator.url)
        again = create_demo_subscriptions(engine, billing, list(METERS))
        assert len(billing.client.v1.subscriptions.list().data) == 2
        assert len(billing.client.v1.prices.list().data) == len(METERS)
    assert again.all == first.all
    assert [s.organization_id for s in first.all] == [1, 2]
