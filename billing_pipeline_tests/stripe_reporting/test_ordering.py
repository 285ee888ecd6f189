"""Raw `last` meters: re-asserts keep the period's last value right, and never block billing.

Through the real assets and the emulator over HTTP; Stripe's values are compared with the
source's sensors counted here from the rows the test inserted.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from billing_pipeline.stripe_reporting.meter_errors import (
    ReportedError,
    mark_reported_rows_rejected,
)
from billing_pipeline_tests.support.billing_month import sensors_active_at
from billing_pipeline_tests.support.builders import add_organization, add_sensor, midnight
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.meter_kinds import recreate_meters
from billing_pipeline_tests.support.reporting import (
    TODAY,
    days_before,
    period_value,
    run_days,
    stripe_view,
)
from billing_pipeline_tests.support.stripe import new_customer

D1, D2, D3 = days_before(4), days_before(3), days_before(2)


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_rejected_reassert_is_followed_by_a_later_revision_and_billing_goes_on(
    billing: Billing, api: str
) -> None:
    # Issue 20, item 7: a re-assert Stripe refused after accepting it spent its identifier; the
    # next plan re-asserts the day again past it, and every customer's days still go out.
    recreate_meters(billing.emulator, billing.stripe_billing, "raw")
    billing.emulator.set_last_mode("arrival")
    alpha = new_customer(billing.stripe_billing, "Alpha")
    beta = new_customer(billing.stripe_billing, "Beta")
    add_organization(billing.engine, 1, customer=alpha)
    add_organization(billing.engine, 2, customer=beta)
    add_sensor(billing.engine, 11, 1, midnight(D1) - timedelta(days=3))
    add_sensor(billing.engine, 21, 2, midnight(D1) - timedelta(days=3))
    url = billing.api_base
    assert run_days(
        billing.instance, billing.database_url, url, D1, D2, meter_event_api=api
    ).success

    # A back-dated sensor active at D1's end only: D1 is corrected, so D2 is re-asserted.
    add_sensor(
        billing.engine, 12, 1, midnight(D1) + timedelta(hours=1), midnight(D2) + timedelta(hours=1)
    )
    assert run_days(billing.instance, billing.database_url, url, D1, meter_event_api=api).success
    with billing.engine.begin() as connection:
        reassert = connection.execute(
            text(
                "SELECT identifier, event_name FROM billing.meter_ledger "
                "WHERE stripe_customer_id = :alpha AND meter = 'active_sensors' AND day = :day "
                "ORDER BY revision DESC LIMIT 1"
            ),
            {"alpha": alpha, "day": D2},
        ).one()
        # Stripe drops it and reports it invalid.
        billing.stripe_billing.client.v1.billing.meter_event_adjustments.create(
            {
                "event_name": reassert.event_name,
                "type": "cancel",
                "cancel": {"identifier": reassert.identifier},
            }
        )
        errors = [ReportedError(reassert.identifier, "archived_meter", "rejected")]
        assert mark_reported_rows_rejected(connection, "evt_report", errors) == [
            reassert.identifier
        ]

    assert run_days(billing.instance, billing.database_url, url, D3, meter_event_api=api).success
    assert run_days(billing.instance, billing.database_url, url, D3, meter_event_api=api).success

    view = stripe_view(billing.stripe_billing, [alpha, beta], D1, TODAY)
    for customer, organization in ((alpha, 1), (beta, 2)):
        for day in (D1, D2, D3):
            expected = sensors_active_at(billing.engine, organization, midnight(day + timedelta(1)))
            assert view[("active_sensors", customer, day)] == expected, (customer, day)
    # A period ending after D2 ends on D2's value by arrival too: the re-assert went out again.
    assert period_value(billing.stripe_billing, "active_sensors", alpha, D1, D3) == (
        sensors_active_at(billing.engine, 1, midnight(D3))
    )
