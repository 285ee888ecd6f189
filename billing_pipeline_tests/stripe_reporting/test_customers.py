"""Per customer, meter and day: attribution, moves, backdated subscriptions, shared customers.

Each test drives the real assets on a real Dagster instance against the emulator over HTTP, for
both kinds of Stripe meter, and compares Stripe's daily summaries with values written out here
from the source rows the test inserted.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
from sqlalchemy import Engine

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.checks import unbilled_usage
from billing_pipeline.stripe_reporting.reconciliation_check import build_reconciliation_check
from billing_pipeline_tests.support.billing_month import readings_in, sensors_active_at
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_readings_at,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.reporting import (
    ASSETS,
    TODAY,
    add_billing_period,
    days_before,
    move_subscriptions,
    reconcile_days,
    run_days,
    stripe_value,
    stripe_view,
    subscribe,
)
from billing_pipeline_tests.support.stripe import new_customer
from stripe_emulator.server import StripeEmulator

D1, D2, D3 = days_before(4), days_before(3), days_before(2)
SETTLED = build_reconciliation_check(settle_window=timedelta(0))


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_moved_organization_is_reversed_on_the_old_customer_and_billed_on_the_new(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    meter_kind: str,
    api: str,
) -> None:
    # Case 1: the subscription moves to another customer (or its webhooks were applied late).
    alpha, beta = new_customer(stripe_billing, "Alpha"), new_customer(stripe_billing, "Beta")
    add_organization(engine, 1, customer=alpha)
    add_sensor(engine, 11, 1, midnight(D1) - timedelta(days=3))
    add_readings(engine, 11, D1, 5)
    add_readings(engine, 11, D2, 3)
    assert run_days(
        dagster_instance, database_url, emulator_server.url, D1, meter_event_api=api
    ).success
    assert stripe_view(stripe_billing, [alpha, beta], D1, TODAY) == {
        ("active_sensors", alpha, D1): 1,
        ("temperature_readings", alpha, D1): 5,
    }

    move_subscriptions(engine, 1, beta)
    # A run of another day corrects D1 too: every run converges Stripe's whole window.
    result = run_days(
        dagster_instance,
        database_url,
        emulator_server.url,
        D2,
        assets=[*ASSETS, SETTLED],
        meter_event_api=api,
    )

    assert result.success
    assert stripe_view(stripe_billing, [alpha, beta], D1, TODAY) == {
        ("active_sensors", beta, D1): 1,
        ("temperature_readings", beta, D1): 5,
        ("active_sensors", beta, D2): 1,
        ("temperature_readings", beta, D2): 3,
    }
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.metadata


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_an_organization_that_moved_is_cut_only_at_its_new_customers_boundaries(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    meter_kind: str,
    api: str,
) -> None:
    # Issue 20, item 5: organization 1 left Alpha for Beta before D1. Alpha's period ends at
    # 10:00 on D1; Beta's do not. Beta's D1 is one part holding both its organizations.
    alpha, beta = new_customer(stripe_billing, "Alpha"), new_customer(stripe_billing, "Beta")
    add_organization(engine, 3, customer=alpha)
    add_organization(engine, 2, customer=beta)
    add_organization(engine, 1)
    subscribe(engine, 1, alpha, ended=midnight(D1) - timedelta(days=1))
    subscribe(engine, 1, beta, started=midnight(D1) - timedelta(days=1))
    boundary = midnight(D1) + timedelta(hours=10)
    add_billing_period(engine, f"sub_{alpha}", alpha, boundary - timedelta(days=30), boundary)
    add_billing_period(engine, f"sub_{alpha}", alpha, boundary, boundary + timedelta(days=30))
    sensors = {1: (11, 12), 2: (21, 22, 23, 24, 25), 3: (31,)}
    for organization, ids in sensors.items():
        for sensor in ids:
            add_sensor(engine, sensor, organization, midnight(D1) - timedelta(days=3))
            add_readings_at(
                engine, sensor, [midnight(D1) + timedelta(hours=h) for h in (3, 9, 12, 20)]
            )

    result = run_days(
        dagster_instance,
        database_url,
        emulator_server.url,
        D1,
        assets=[*ASSETS, SETTLED],
        meter_event_api=api,
    )

    assert result.success
    organizations = {alpha: [3], beta: [1, 2]}
    # What Stripe bills each customer for D1, and on hourly meters for each side of Alpha's
    # period end too (a raw `last` meter bills whole days: README, "Billing periods").
    spans = {alpha: [(midnight(D1), midnight(D2))], beta: [(midnight(D1), midnight(D2))]}
    if meter_kind == "pre_aggregated":
        spans[alpha] += [(midnight(D1), boundary), (boundary, midnight(D2))]
    for customer, customer_spans in spans.items():
        for start, end in customer_spans:
            source = {
                "temperature_readings": sum(
                    readings_in(engine, o, start, end) for o in organizations[customer]
                ),
                "active_sensors": sum(
                    sensors_active_at(engine, o, end) for o in organizations[customer]
                ),
            }
            stripe = {m: stripe_value(stripe_billing, m, customer, start, end) for m in source}
            assert stripe == source, (customer, start)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.metadata


def test_days_without_a_customer_are_listed_and_billed_once_a_backdated_subscription_arrives(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    meter_kind: str,
) -> None:
    # Case 3: the organization has usage before any subscription is known.
    alpha = new_customer(stripe_billing, "Alpha")
    add_organization(engine, 1)
    add_sensor(engine, 11, 1, midnight(D1) - timedelta(days=3))
    add_readings(engine, 11, D1, 4)
    result = run_days(
        dagster_instance, database_url, emulator_server.url, D1, assets=[*ASSETS, unbilled_usage]
    )
    assert result.success
    assert stripe_view(stripe_billing, [alpha], D1, TODAY) == {}
    [listed] = result.get_asset_check_evaluations()
    assert listed.metadata["rows"].value == 2  # both meters of D1, with their reason
    assert "no subscription (free tier)" in str(listed.metadata["details"].value)

    # The checkout's webhooks arrive later, with a subscription that started before D1.
    subscribe(engine, 1, alpha, started=midnight(D1) - timedelta(days=1))
    add_readings(engine, 11, D2, 2)
    assert run_days(dagster_instance, database_url, emulator_server.url, D2).success

    assert stripe_view(stripe_billing, [alpha], D1, TODAY) == {
        ("active_sensors", alpha, D1): 1,
        ("temperature_readings", alpha, D1): 4,
        ("active_sensors", alpha, D2): 1,
        ("temperature_readings", alpha, D2): 2,
    }


def test_only_billable_subscriptions_bill_and_only_on_their_days(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    meter_kind: str,
) -> None:
    # Case 7: ended exactly at midnight, no start date, incomplete; and one canceled at noon,
    # which bills the readings before its end only (00:00 and 06:00 of D2's four).
    customers = [new_customer(stripe_billing, f"C{n}") for n in range(4)]
    ended_at_midnight, never_started, incomplete, canceled = customers
    for organization in range(1, len(customers) + 1):
        add_organization(engine, organization)
        add_sensor(engine, organization * 10, organization, midnight(D1) - timedelta(days=3))
        for day in (D1, D2, D3):
            add_readings(engine, organization * 10, day, organization)
    subscribe(engine, 1, ended_at_midnight, ended=midnight(D2))
    subscribe(engine, 2, never_started, started=None)
    subscribe(engine, 3, incomplete, status="incomplete")
    subscribe(engine, 4, canceled, status="canceled", ended=midnight(D2) + timedelta(hours=12))

    assert run_days(dagster_instance, database_url, emulator_server.url, D1, D3).success

    assert stripe_view(stripe_billing, customers, D1, TODAY) == {
        ("active_sensors", ended_at_midnight, D1): 1,
        ("temperature_readings", ended_at_midnight, D1): 1,
        ("active_sensors", canceled, D1): 1,
        ("temperature_readings", canceled, D1): 4,
        ("active_sensors", canceled, D2): 1,
        ("temperature_readings", canceled, D2): 2,
    }


def test_organizations_sharing_a_customer_are_summed_for_every_meter(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    meter_kind: str,
) -> None:
    # Case 8: two organizations on one Stripe customer; the gauge is the sum of their sensors.
    alpha = new_customer(stripe_billing, "Alpha")
    add_organization(engine, 1, customer=alpha)
    add_organization(engine, 2)
    subscribe(engine, 2, alpha)
    for sensor, organization in ((11, 1), (12, 1), (21, 2), (22, 2), (23, 2)):
        add_sensor(engine, sensor, organization, midnight(D1) - timedelta(days=3))
        add_readings(engine, sensor, D1, sensor % 10)

    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success

    assert stripe_view(stripe_billing, [alpha], D1, TODAY) == {
        ("active_sensors", alpha, D1): 2 + 3,
        ("temperature_readings", alpha, D1): (1 + 2) + (1 + 2 + 3),
    }


def test_reconciliation_fails_on_a_day_whose_stripe_value_differs_from_the_source(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    meter_kind: str,
) -> None:
    alpha = new_customer(stripe_billing, "Alpha")
    add_organization(engine, 1, customer=alpha)
    add_sensor(engine, 11, 1, midnight(D1) - timedelta(days=3))
    add_readings(engine, 11, D1, 6)
    assert run_days(dagster_instance, database_url, emulator_server.url, D1).success

    # Someone sends an event for our customer behind the pipeline's back, later in the day.
    stripe_billing.client.v1.billing.meter_events.create(
        {
            "event_name": "temperature_readings",
            "identifier": "manual-entry-1",
            # In the hour window of the pipeline's own event for the day.
            "timestamp": int((midnight(D1) + timedelta(hours=23, minutes=30)).timestamp()),
            "payload": {"stripe_customer_id": alpha, "value": "3"},
        }
    )
    evaluations = reconcile_days(
        dagster_instance, database_url, emulator_server.url, D1, D3, SETTLED
    )

    # Only the day with the foreign event fails; each day has its own result.
    assert {day: e.passed for day, e in evaluations.items()} == {D1: False, D2: True, D3: True}
    evaluation = evaluations[D1]
    assert evaluation.metadata["drifts"].value == 1
    details = str(evaluation.metadata["drift_details"].value)
    stripe_value = 3 if meter_kind == "pre_aggregated" else 9  # newest event vs every event
    assert f"| temperature_readings | {D1} | {alpha} | 1 | 6 | 6 | {stripe_value}" in details
