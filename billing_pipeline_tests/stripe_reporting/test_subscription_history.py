"""Each part of a day is billed by the status its subscription had then, not by today's.

The subscription's life reaches the pipeline as signed webhook events posted to the real
receiver and applied by the processing job; the real reporting assets then bill the emulator,
for both kinds of Stripe meter and both sender APIs. The expected totals are this file's own SQL
over the source rows of the days the subscription was billable.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.webhooks.processing import process_open_events
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.reporting import TODAY, days_before, run_days, stripe_view
from billing_pipeline_tests.support.stripe import new_customer
from billing_pipeline_tests.support.webhooks import post_event, subscription_event
from stripe_emulator.server import StripeEmulator

DAYS = [days_before(n) for n in range(6, 0, -1)]  # D1 … D6, the last one yesterday
D1, D2, D3, D4, D5, D6 = DAYS
ORGANIZATION = 1


def _at(day: date, seconds: int = 0) -> int:
    return int(midnight(day).timestamp()) + seconds


def _source(engine: Engine, days: list[date]) -> dict[tuple[str, date], int]:
    """What the organization owes on `days`, from the source rows: readings recorded in each
    day, and sensors active at its end."""
    with engine.connect() as connection:
        readings = connection.execute(
            text(
                "SELECT CAST(r.recorded_at AT TIME ZONE 'UTC' AS date) AS day, count(*) AS n "
                "FROM temperature_readings r JOIN sensors s ON s.id = r.sensor_id "
                "WHERE s.organization_id = :org GROUP BY 1"
            ),
            {"org": ORGANIZATION},
        ).all()
        sensors = {
            day: connection.execute(
                text(
                    "SELECT count(*) FROM sensors WHERE organization_id = :org "
                    "AND created_at < :end AND (deactivated_at IS NULL OR deactivated_at >= :end)"
                ),
                {"org": ORGANIZATION, "end": midnight(day + timedelta(days=1))},
            ).scalar_one()
            for day in days
        }
    owed = {("temperature_readings", row.day): int(row.n) for row in readings if row.day in days}
    owed |= {("active_sensors", day): int(n) for day, n in sensors.items() if n}
    return owed


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_trial_paused_and_resumed_bills_its_trial_and_resumed_days_never_its_paused_ones(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    stripe_billing: StripeBilling,
    receiver_url: str,
    meter_kind: str,
    api: str,
) -> None:
    customer = new_customer(stripe_billing, "Trial")
    add_organization(engine, ORGANIZATION)
    add_sensor(engine, 11, ORGANIZATION, midnight(D1) - timedelta(days=3))
    for n, day in enumerate(DAYS):
        add_readings(engine, 11, day, 2 + n)
    life: dict[str, Any] = {
        "metadata": {"organization_id": str(ORGANIZATION)},
        "start_date": _at(D1),
        "trial_start": _at(D1),
        "trial_end": _at(D3),
    }
    # A two-day trial from D1; it ends at D3 without a payment method, so Stripe pauses it.
    trial = subscription_event(
        "customer.subscription.created",
        "sub_trial",
        customer,
        _at(D1, 5),
        status="trialing",
        period=(_at(D1), _at(D3)),
        **life,
    )
    paused = subscription_event(
        "customer.subscription.updated",
        "sub_trial",
        customer,
        _at(D3, 60),
        status="paused",
        period=(_at(D3), _at(D3) + 31 * 86400),
        **life,
    )
    for payload in (trial, paused):
        assert post_event(receiver_url, payload) == 200
    assert process_open_events(engine).processed == [trial["id"], paused["id"]]

    assert run_days(
        dagster_instance, database_url, emulator_server.url, D1, D6, meter_event_api=api
    ).success
    # While paused: the trial days stay billed, the paused days are not.
    assert _stripe(stripe_billing, customer) == _source(engine, [D1, D2])

    # Resumed at D5: a new period from the resume, status active from then on.
    resumed = subscription_event(
        "customer.subscription.updated",
        "sub_trial",
        customer,
        _at(D5),
        status="active",
        period=(_at(D5), _at(D5) + 31 * 86400),
        **life,
    )
    assert post_event(receiver_url, resumed) == 200
    assert process_open_events(engine).processed == [resumed["id"]]
    assert run_days(
        dagster_instance, database_url, emulator_server.url, D1, D6, meter_event_api=api
    ).success

    assert _stripe(stripe_billing, customer) == _source(engine, [D1, D2, D5, D6])


def _stripe(stripe_billing: StripeBilling, customer: str) -> dict[tuple[str, date], int]:
    view = stripe_view(stripe_billing, [customer], D1, TODAY)
    return {(meter, day): int(value) for (meter, _, day), value in view.items()}
