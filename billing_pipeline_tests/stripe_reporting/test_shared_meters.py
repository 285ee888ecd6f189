"""Two subscriptions of one customer priced on the same meter: held back, named, never hidden.

Stripe's meters aggregate per customer, so each such subscription's invoice would bill the
customer's whole usage. Subscriptions reach the pipeline as signed webhook events posted to the
real receiver (their items carry real emulator prices, `recurring.meter` included) and applied
by the processing job; the real reporting assets and checks run against the emulator for both
kinds of Stripe meter and both sender APIs. Expected values are this file's SQL over the source.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from billing_pipeline.cli import main
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.checks import (
    subscriptions_sharing_a_meter,
    unbilled_usage,
    usage_after_invoice_finalized,
)
from billing_pipeline.usage.meters import METERS
from billing_pipeline.webhooks.processing import process_open_events
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.invoicing import metered_price
from billing_pipeline_tests.support.reporting import (
    ASSETS,
    TODAY,
    days_before,
    period_value,
    refresh_billing_status,
    run_days,
    stripe_view,
)
from billing_pipeline_tests.support.stripe import TEST_KEY, make_client, new_customer
from billing_pipeline_tests.support.webhooks import (
    finalized_invoice_event,
    post_event,
    priced_items,
    subscription_event,
)
from stripe_emulator.server import StripeEmulator

D1, D2, D3, D4 = (days_before(n) for n in (5, 4, 3, 2))
UNIT_AMOUNT = 7  # minor units per unit, both prices
CHECKS = [unbilled_usage, subscriptions_sharing_a_meter]


def _at(day: date) -> int:
    return int(midnight(day).timestamp())


def _readings(engine: Engine, organizations: list[int], days: list[date]) -> dict[date, int]:
    """Readings of `organizations` recorded on each of `days`, from the source rows."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT CAST(r.recorded_at AT TIME ZONE 'UTC' AS date) AS day, count(*) AS n "
                "FROM temperature_readings r JOIN sensors s ON s.id = r.sensor_id "
                "WHERE s.organization_id = ANY(:orgs) GROUP BY 1"
            ),
            {"orgs": organizations},
        ).all()
    return {row.day: int(row.n) for row in rows if row.day in days}


def _subscribe(
    receiver_url: str,
    engine: Engine,
    subscription: str,
    customer: str,
    organization: int,
    start: date,
    prices: list[Any],
) -> None:
    period = (_at(start), _at(start) + 31 * 86400)
    created = subscription_event(
        "customer.subscription.created",
        subscription,
        customer,
        _at(start) + 60,
        start_date=_at(start),
        period=period,
        metadata={"organization_id": str(organization)},
        items=priced_items(prices, period),
    )
    assert post_event(receiver_url, created) == 200
    assert process_open_events(engine).processed == [created["id"]]


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_second_subscription_on_the_same_meter_holds_the_days_it_shares_and_is_named(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    receiver_url: str,
    meter_kind: str,
    api: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = make_client(emulator_server.url)
    meter_ids = {m.event_name: m.id for m in stripe_billing.list_meters()}
    prices = [
        metered_price(client, meter_ids[m.event_name], m.name, unit_amount=UNIT_AMOUNT)
        for m in METERS
    ]
    customer = new_customer(stripe_billing, "Shared")
    for organization in (1, 2):
        add_organization(engine, organization)
        add_sensor(engine, organization * 10, organization, midnight(D1) - timedelta(days=3))
        for n, day in enumerate((D1, D2, D3, D4)):
            add_readings(engine, organization * 10, day, organization + n)
    _subscribe(receiver_url, engine, "sub_first", customer, 1, D1, prices)

    first = run_days(
        dagster_instance, database_url, emulator_server.url, D1, D4, meter_event_api=api
    )
    assert first.success
    alone = _readings(engine, [1], [D1, D2, D3, D4])
    before = stripe_view(stripe_billing, [customer], D1, TODAY)
    assert {
        day: v for (meter, _, day), v in before.items() if meter == "temperature_readings"
    } == alone

    # The customer subscribes its second organization from D3 on, with the same prices.
    _subscribe(receiver_url, engine, "sub_second", customer, 2, D3, prices)
    second = run_days(
        dagster_instance,
        database_url,
        emulator_server.url,
        D1,
        D4,
        assets=[*ASSETS, *CHECKS],
        meter_event_api=api,
    )

    assert second.success
    # Nothing new reached Stripe: D1 and D2 are the first organization's alone, and D3 and D4,
    # which both subscriptions would bill, keep what was sent before the second one appeared.
    assert stripe_view(stripe_billing, [customer], D1, TODAY) == before
    evaluations = {e.check_name: e for e in second.get_asset_check_evaluations()}
    shared = evaluations["subscriptions_sharing_a_meter"]
    assert not shared.passed and shared.severity == dg.AssetCheckSeverity.ERROR
    held_readings = sum(_readings(engine, [1, 2], [D3, D4]).values())
    reported = alone[D3] + alone[D4]
    description = shared.description or ""
    assert (
        f"customer {customer}: subscriptions sub_first, sub_second all price "
        f"temperature_readings on 2 days (from {D3} to {D4}): {held_readings} units held back, "
        f"{reported} already in Stripe and billed by each; at stake "
        f"sub_first: {(held_readings + reported) * UNIT_AMOUNT} usd, "
        f"sub_second: {(held_readings + reported) * UNIT_AMOUNT} usd"
    ) in description
    unbilled = evaluations["unbilled_usage"]
    assert not unbilled.passed
    assert "several subscriptions of the customer price this meter" in str(
        unbilled.metadata["details"].value
    )

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", emulator_server.url)
    assert main(["status", "--from", D1.isoformat(), "--to", D4.isoformat()]) == 0
    output = capsys.readouterr().out
    assert f"- {D3} temperature_readings: " in output
    held_d3 = sum(_readings(engine, [1, 2], [D3]).values())
    assert f"{held_d3} held: several subscriptions of one customer price this meter" in output
    report = refresh_billing_status(dagster_instance, database_url, emulator_server.url)
    assert report.metadata["held/temperature_readings"].value == held_readings
    assert report.metadata["healthy"].value is False


def test_each_invoice_line_is_compared_with_its_own_subscriptions_organizations(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    receiver_url: str,
) -> None:
    """Each subscription's invoice bills the customer's whole total on the meter. Compared with
    the customer's total every line passed; compared with its own subscription's organization,
    the second subscription's line shows that it bills the first organization's usage again."""
    client = make_client(emulator_server.url)
    meter_ids = {m.event_name: m.id for m in stripe_billing.list_meters()}
    readings = next(m for m in METERS if m.name == "temperature_readings")
    price = metered_price(client, meter_ids[readings.event_name], "Readings", unit_amount=1)
    customer = new_customer(stripe_billing, "Shared")
    for organization in (1, 2):
        add_organization(engine, organization)
        add_sensor(engine, organization * 10, organization, midnight(D1) - timedelta(days=3))
        for day in (D1, D2, D3, D4):
            add_readings(engine, organization * 10, day, organization * 3)
    _subscribe(receiver_url, engine, "sub_first", customer, 1, D1, [price])
    assert run_days(dagster_instance, database_url, emulator_server.url, D1, D4).success
    _subscribe(receiver_url, engine, "sub_second", customer, 2, D3, [price])
    assert run_days(dagster_instance, database_url, emulator_server.url, D1, D4).success

    # Each invoice bills what Stripe aggregates for the customer over the invoice's period.
    end = D4 + timedelta(days=1)
    lines = {}
    for n, (subscription, start) in enumerate((("sub_first", D1), ("sub_second", D3))):
        invoiced = int(period_value(stripe_billing, readings.event_name, customer, start, end))
        lines[f"in_{n}"] = invoiced
        line = (price.id, invoiced, _at(start), _at(end))
        payload = finalized_invoice_event(f"in_{n}", subscription, customer, _at(end), [line])
        assert post_event(receiver_url, payload) == 200
    process_open_events(engine)
    result = run_days(
        dagster_instance,
        database_url,
        emulator_server.url,
        D4,
        assets=[*ASSETS, usage_after_invoice_finalized],
    )

    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    details = str(evaluation.metadata["details"].value)
    # The second invoice bills the first organization's D3 and D4 (all Stripe holds), while its
    # own organization's usage there is the second's.
    first_org = _readings(engine, [1], [D3, D4])
    second_org = _readings(engine, [2], [D3, D4])
    assert lines["in_1"] == sum(first_org.values())
    assert f"| in_1 | {lines['in_1']} | {sum(second_org.values())} |" in details
    # The first invoice bills exactly its organization's usage.
    assert lines["in_0"] == sum(_readings(engine, [1], [D1, D2, D3, D4]).values())
    assert "| in_0 |" not in details
