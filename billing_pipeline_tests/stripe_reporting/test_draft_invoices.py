"""Draft invoices verified before Stripe finalizes them: the comparison, the run that converges a
draft, the line that cannot be made right in time, and when the sensor looks again.

The subscription and the draft reach the pipeline as signed webhook events posted to the real
receiver; the real usage and reporting assets and the check run against the emulator, which holds
the meter events. Expected values are this file's own counts of the source rows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import DraftOutcome
from billing_pipeline.stripe_reporting.checks import usage_after_invoice_finalized
from billing_pipeline.stripe_reporting.draft_invoice_check import draft_invoices_verified
from billing_pipeline.stripe_reporting.draft_invoices import (
    ATTEMPT_TAG,
    DRAFT_TAG,
    LAST_LOOK,
    MAX_ATTEMPTS,
    Draft,
    Verification,
    next_attempt,
)
from billing_pipeline.usage.meters import TEMPERATURE_READINGS
from billing_pipeline.webhooks.processing import process_open_events
from billing_pipeline_tests.support.billing_month import readings_in
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.invoicing import metered_price
from billing_pipeline_tests.support.reporting import (
    ASSETS,
    days_before,
    run_days,
    stripe_value,
)
from billing_pipeline_tests.support.stripe import make_client, new_customer
from billing_pipeline_tests.support.webhooks import (
    draft_invoice_event,
    finalized_invoice_event,
    post_event,
    priced_items,
    subscription_event,
)

D1, D4 = days_before(5), days_before(2)
START, END = midnight(D1), midnight(D4 + timedelta(days=1))
ORGANIZATION, SENSOR = 1, 10


def _billed_subscription(billing: Billing, receiver_url: str) -> tuple[str, str]:
    """A customer subscribed (readings price) for the days D1..D4, billed; (customer, price)."""
    engine, stripe_billing = billing.engine, billing.stripe_billing
    meters = {m.event_name: m.id for m in stripe_billing.list_meters()}
    meter_id = meters[TEMPERATURE_READINGS.event_name]
    price = metered_price(make_client(billing.api_base), meter_id, "Readings", unit_amount=1)
    customer = new_customer(stripe_billing, "Drafted")
    add_organization(engine, ORGANIZATION)
    add_sensor(engine, SENSOR, ORGANIZATION, START - timedelta(days=3))
    for day in range(4):
        add_readings(engine, SENSOR, D1 + timedelta(days=day), 6)
    period = (int(START.timestamp()), int(END.timestamp()))
    created = subscription_event(
        "customer.subscription.created",
        "sub_drafted",
        customer,
        period[0] + 60,
        start_date=period[0],
        period=period,
        metadata={"organization_id": str(ORGANIZATION)},
        items=priced_items([price], period),
    )
    assert post_event(receiver_url, created) == 200
    process_open_events(engine)
    assert run_days(billing.instance, billing.database_url, billing.api_base, D1, D4).success
    return customer, price.id


def _draft(
    receiver_url: str, engine: Engine, customer: str, price: str, finalizes_in: timedelta
) -> None:
    """Stripe's `invoice.created` for the period, finalizing `finalizes_in` from now."""
    finalizes_at = int((datetime.now(UTC) + finalizes_in).timestamp())
    line = (price, 0, int(START.timestamp()), int(END.timestamp()))
    payload = draft_invoice_event(
        "in_draft", "sub_drafted", customer, int(END.timestamp()), finalizes_at, [line]
    )
    assert post_event(receiver_url, payload) == 200
    process_open_events(engine)


def _verify(billing: Billing, attempt: int) -> dg.AssetCheckEvaluation:
    """One `verify_draft_invoice` run over the period, as the draft sensor launches it."""
    result = dg.materialize(
        [*ASSETS, draft_invoices_verified],
        instance=billing.instance,
        resources=billing.resources(),
        tags={
            "dagster/asset_partition_range_start": D1.isoformat(),
            "dagster/asset_partition_range_end": D4.isoformat(),
            DRAFT_TAG: "in_draft",
            ATTEMPT_TAG: str(attempt),
        },
        raise_on_error=False,
    )
    assert result.success
    [evaluation] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "draft_invoices_verified"
    ]
    return evaluation


def _outcomes(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as connection:
        return [
            (row.attempt, row.outcome)
            for row in connection.execute(
                text("SELECT attempt, outcome FROM billing.draft_verifications ORDER BY attempt")
            )
        ]


def test_a_late_reading_missing_from_a_draft_reaches_stripe_through_its_verification_run(
    billing: Billing, receiver_url: str
) -> None:
    engine, stripe_billing = billing.engine, billing.stripe_billing
    customer, price = _billed_subscription(billing, receiver_url)
    # Readings of D2 arrive after the day was billed: Stripe's aggregate for the period is short.
    add_readings(engine, SENSOR, D1 + timedelta(days=1), 3)
    source = readings_in(engine, ORGANIZATION, START, END)
    event = TEMPERATURE_READINGS.event_name
    assert stripe_value(stripe_billing, event, customer, START, END) == source - 3
    _draft(receiver_url, engine, customer, price, timedelta(hours=1))

    evaluation = _verify(billing, attempt=1)

    # The run recomputed D2 and sent the difference: the draft now holds the source's total.
    assert evaluation.passed
    assert stripe_value(stripe_billing, event, customer, START, END) == source
    details = str(evaluation.metadata["details"].value)
    assert f"| {customer} | in_draft | 1 | temperature_readings |" in details
    assert f"| {source} | {source} | verified |" in details
    assert _outcomes(engine) == [(1, DraftOutcome.VERIFIED)]


def test_a_line_still_wrong_at_the_last_look_is_recorded_and_named_once(
    billing: Billing, receiver_url: str
) -> None:
    engine, stripe_billing = billing.engine, billing.stripe_billing
    customer, price = _billed_subscription(billing, receiver_url)
    # Someone else reported 5 units for the customer in the period: the ledger does not know
    # the event, so no run of the pipeline takes it back.
    stripe_billing.send_meter_event(
        event_name=TEMPERATURE_READINGS.event_name,
        customer=customer,
        value=5,
        identifier="manual-entry-1",
        timestamp=START + timedelta(days=1, hours=5, minutes=30),
    )
    source = readings_in(engine, ORGANIZATION, START, END)
    # The draft finalizes in ten minutes: its first look is already its last.
    _draft(receiver_url, engine, customer, price, LAST_LOOK - timedelta(minutes=5))

    first = _verify(billing, attempt=1)
    again = _verify(billing, attempt=2)

    assert not first.passed
    assert first.severity == dg.AssetCheckSeverity.ERROR
    assert first.metadata["unfixable_lines"].value == 1
    assert first.description is not None
    assert f"customer {customer}: invoice in_draft line 1 (temperature_readings" in (
        first.description
    )
    assert f"expected {source}, Stripe holds {source + 5}" in first.description
    # Recorded once, with the customer, the line, expected and held; not named again.
    assert again.passed and again.metadata["unfixable_lines"].value == 0
    with engine.connect() as connection:
        recorded = connection.execute(
            text(
                "SELECT invoice_id, line, stripe_customer_id, meter, expected, held "
                "FROM billing.unfixable_draft_lines"
            )
        ).all()
    assert [tuple(row) for row in recorded] == [
        ("in_draft", 1, customer, "temperature_readings", source, source + 5)
    ]
    assert _outcomes(engine) == [(1, DraftOutcome.UNFIXABLE), (2, DraftOutcome.UNFIXABLE)]

    # Stripe finalizes it as it stood; the finalized-invoice check shows what the draft's look
    # recorded beside the difference.
    line = (price, source + 5, int(START.timestamp()), int(END.timestamp()))
    finalized = finalized_invoice_event(
        "in_draft", "sub_drafted", customer, int(END.timestamp()) + 3600, [line]
    )
    assert post_event(receiver_url, finalized) == 200
    process_open_events(engine)
    result = dg.materialize(
        [usage_after_invoice_finalized],
        instance=billing.instance,
        resources=billing.resources(),
        selection=dg.AssetSelection.checks(usage_after_invoice_finalized),
    )
    [invoice_check] = result.get_asset_check_evaluations()
    assert not invoice_check.passed
    details = str(invoice_check.metadata["details"].value)
    assert f"| in_draft | {source + 5} | {source} | -5 |" in details
    assert details.endswith(f"| unfixable: expected {source}, held {source + 5} |")


NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
DRAFT = Draft("in_x", NOW + timedelta(minutes=30), NOW - timedelta(days=30), NOW)
EARLY = NOW + timedelta(minutes=1)
LATE = DRAFT.finalizes_at - LAST_LOOK + timedelta(minutes=1)


def _seen(attempt: int, outcome: DraftOutcome, at: datetime = EARLY) -> Verification:
    return Verification(attempt, outcome, at)


@pytest.mark.parametrize(
    ("launched", "finished", "latest", "now", "expected"),
    [
        pytest.param(0, 0, None, EARLY, 1, id="first look as soon as the draft is known"),
        pytest.param(1, 0, None, EARLY, None, id="a look in progress"),
        pytest.param(1, 1, _seen(1, DraftOutcome.VERIFIED), EARLY, None, id="verified, early"),
        pytest.param(1, 1, _seen(1, DraftOutcome.GAP), EARLY, None, id="gap waits for last look"),
        pytest.param(1, 1, None, EARLY, 2, id="a run failed before its check: retry"),
        pytest.param(1, 1, _seen(1, DraftOutcome.VERIFIED), LATE, 2, id="last look"),
        pytest.param(1, 1, _seen(1, DraftOutcome.GAP), LATE, 2, id="last look after a gap"),
        pytest.param(2, 2, _seen(2, DraftOutcome.VERIFIED, LATE), LATE, None, id="last look done"),
        pytest.param(1, 1, _seen(1, DraftOutcome.UNFIXABLE), LATE, None, id="unfixable"),
        pytest.param(MAX_ATTEMPTS, MAX_ATTEMPTS, None, LATE, None, id="attempts exhausted"),
    ],
)
def test_when_the_sensor_looks_at_a_draft(
    launched: int, finished: int, latest: Verification | None, now: datetime, expected: Any
) -> None:
    assert next_attempt(DRAFT, launched, finished, latest, now) == expected


def test_a_draft_names_the_days_of_its_period() -> None:
    assert (DRAFT.first_day, DRAFT.last_day) == (date(2026, 1, 30), date(2026, 3, 1))
    midnight_end = Draft("in_y", NOW, NOW - timedelta(days=2), datetime(2026, 3, 1, tzinfo=UTC))
    assert midnight_end.last_day == date(2026, 2, 28)
    assert DRAFT.run_key(2) == "draft-in_x-2"
