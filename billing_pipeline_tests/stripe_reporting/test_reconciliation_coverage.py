"""Reconciliation covers every (meter, customer) within N days on a daily budget of Stripe reads.

Through the real check on a real Dagster instance, Postgres and the emulator, one run a day on a
clock the test moves day by day: with a budget of two summary reads a day and N = 4 days, eight
pairs are compared two a day, least recently compared first, so a drift nobody on our side
caused (another integration sending an event for a quiet customer) is found within four days;
a customer with an anomaly (a correction the billing run just sent) is asked about the same day,
ahead of the rotation. The emulator's per-route request counter proves the budget held.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import cast

import dagster as dg
from sqlalchemy import Engine, text

from billing_pipeline.stripe_reporting.reconciliation_check import build_reconciliation_check
from billing_pipeline.stripe_reporting.reconciliation_coverage import (
    RotationPolicy,
    candidates,
    select_pairs,
)
from billing_pipeline_tests.support.builders import (
    add_ledger_row,
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import BILLING_ASSETS, Billing
from billing_pipeline_tests.support.reporting import reconcile_days
from billing_pipeline_tests.support.stripe import new_customer

TODAY = datetime.now(UTC).date()
D1 = TODAY - timedelta(days=3)
SUMMARIES = "list_event_summaries"
# The daily runs happen at 05:00 from the day after D1 ended: the first ones before the test's
# real time, so a correction the test makes now is newer than those runs' comparisons.
STARTED = midnight(D1) + timedelta(hours=5)
# Four customers x two meters = eight pairs; two reads a day cover them in four days.
POLICY = RotationPolicy(daily_calls=2, rotation_days=4, reads_per_second=20)


def bill_customers(billing: Billing, count: int = 4) -> list[str]:
    """`count` customers, one organization each, billed for D1 (2 meters each)."""
    customers = []
    for n in range(1, count + 1):
        customer = new_customer(billing.stripe_billing, f"Customer {n}")
        customers.append(customer)
        add_organization(billing.engine, n, customer=customer)
        add_sensor(billing.engine, 10 * n, n, midnight(D1) - timedelta(days=1))
        add_readings(billing.engine, 10 * n, D1, n + 1)
    assert billing.materialize_day(D1, BILLING_ASSETS).success
    return customers


def send_out_of_band(billing: Billing, customer: str, value: int) -> None:
    """Another integration's event for the customer, in the hour window of our own event of
    the day (meters are pre-aggregated: the newer event replaces the day's value)."""
    billing.stripe_billing.client.v1.billing.meter_events.create(
        {
            "event_name": "temperature_readings",
            "timestamp": int((midnight(D1) + timedelta(hours=23, minutes=30)).timestamp()),
            "payload": {"stripe_customer_id": customer, "value": str(value)},
        }
    )


def reconcile_on(
    billing: Billing, at: datetime, policy: RotationPolicy = POLICY
) -> tuple[dg.AssetCheckEvaluation, int]:
    """One daily reconciliation run on `at`: D1's evaluation and the summary reads Stripe got."""
    check = build_reconciliation_check(settle_window=timedelta(0), clock=lambda: at, policy=policy)
    before = billing.emulator.endpoint_counts().get(SUMMARIES, 0)
    evaluation = reconcile_days(
        billing.instance, billing.database_url, billing.api_base, D1, D1, check
    )[D1]
    return evaluation, billing.emulator.endpoint_counts().get(SUMMARIES, 0) - before


def by_reason(evaluation: dg.AssetCheckEvaluation) -> dict[str, int]:
    return cast(dict[str, int], evaluation.metadata["pairs_asked_by_reason"].value)


def last_compared(billing: Billing) -> dict[tuple[str, str], datetime]:
    with billing.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT meter, stripe_customer_id, last_compared_at FROM billing.reconciled_pairs")
        )
        return {(r.meter, r.stripe_customer_id): r.last_compared_at for r in rows}


def test_a_quiet_customers_drift_is_found_within_n_days_on_the_budget(billing: Billing) -> None:
    customers = bill_customers(billing)
    # The customer the rotation reaches last (pairs are taken in (meter, customer) order while
    # none was compared yet): the drift can only be found on the fourth day.
    quiet = max(customers)
    send_out_of_band(billing, quiet, 1)
    started = STARTED

    found_on = None
    for offset in range(1, POLICY.rotation_days + 1):
        evaluation, reads = reconcile_on(billing, started + timedelta(days=offset))
        metadata = evaluation.metadata
        assert reads == 2, offset  # the emulator saw the budget, not one read more
        assert metadata["calls_made"].value == 2
        assert metadata["calls_today"].value == 2
        assert metadata["call_budget_per_day"].value == 2
        assert metadata["pairs_total"].value == 8
        assert by_reason(evaluation)["rotation"] == 2
        assert metadata["budget_covers_rotation"].value is True
        assert metadata["pairs_left"].value == 6
        assert metadata["never_compared_left"].value == 8 - 2 * offset
        if not evaluation.passed and found_on is None:
            found_on = offset
            details = str(metadata["drift_details"].value)
            organization = customers.index(quiet) + 1
            readings = organization + 1
            row = f"| temperature_readings | {D1} | {quiet} | {organization} | {readings} |"
            assert f"{row} {readings} | 1.0 |" in details

    assert found_on == POLICY.rotation_days
    # Every pair was compared once within the N days, and the rotation survives runs.
    compared = last_compared(billing)
    assert len(compared) == 8
    assert {at.date() for at in compared.values()} == {
        (started + timedelta(days=d)).date() for d in range(1, 5)
    }
    # Day 5: the open drift is asked about first, every day until it is gone; the other read
    # goes to the least recently compared pair (day 1's).
    evaluation, reads = reconcile_on(billing, started + timedelta(days=5))
    assert reads == 2
    assert not evaluation.passed
    reasons = by_reason(evaluation)
    assert reasons["open_drift"] == 1 and reasons["rotation"] == 1
    # That read was the rotation's share: the budget no longer covers N days, and says so.
    assert evaluation.metadata["budget_covers_rotation"].value is False
    assert evaluation.metadata["oldest_left_age_days"].value == 4


def test_a_customer_with_an_anomaly_is_checked_the_same_day(billing: Billing) -> None:
    customers = bill_customers(billing)
    started = STARTED
    # Day 1: a budget large enough to compare every pair once.
    evaluation, reads = reconcile_on(
        billing, started + timedelta(days=1), RotationPolicy(daily_calls=100, rotation_days=4)
    )
    assert evaluation.passed and reads == 8

    # Late readings for one customer: the billing run sends a correction (revision 2), and
    # another integration overwrites the day's value right after it.
    anomalous = customers[1]
    add_readings(billing.engine, 20, D1, 5, ingested_at=datetime.now(UTC))
    assert billing.materialize_day(D1, BILLING_ASSETS).success
    send_out_of_band(billing, anomalous, 1)

    # The next run (the day after, just after the correction), one read: it goes to the
    # corrected pair, ahead of seven pairs equally due.
    day_2 = datetime.now(UTC) + timedelta(minutes=1)
    evaluation, reads = reconcile_on(billing, day_2, replace(POLICY, daily_calls=1))
    assert reads == 1
    assert not evaluation.passed
    assert by_reason(evaluation)["correction"] == 1
    details = str(evaluation.metadata["drift_details"].value)
    assert f"| temperature_readings | {D1} | {anomalous} | 2 | 8 | 8 | 1.0 |" in details
    assert last_compared(billing)[("temperature_readings", anomalous)] == day_2


def test_each_pair_is_due_for_the_first_reason_that_applies(engine: Engine) -> None:
    """From the ledger, the subscriptions and the earlier comparisons, in Postgres; anomalies
    are picked first, in order, within the budget, and what is left is counted."""
    now = datetime.now(UTC)
    day = TODAY - timedelta(days=3)
    sent = {"cus_C", "cus_D", "cus_E", "cus_F", "cus_G"}
    for n, customer in enumerate(sorted(sent), start=3):
        add_ledger_row(engine, n, "sent", customer=customer, day=day, age=timedelta(hours=2))
    add_ledger_row(engine, 1, "failed", customer="cus_A", day=day)
    add_ledger_row(engine, 2, "sent", customer="cus_B", day=day, revision=2)
    add_ledger_row(engine, 8, "failed", customer="cus_H", day=day, age=timedelta(hours=3))
    add_organization(engine, 3, customer="cus_C")
    add_organization(engine, 4, customer="cus_D")
    with engine.begin() as connection:
        # cus_C's subscription changed (a webhook recorded a status) after its last comparison.
        connection.execute(
            text(
                "INSERT INTO billing.subscription_status_history (stripe_subscription_id, "
                "effective_from, status, event_created) VALUES ('sub_cus_C', :at, 'canceled', :at)"
            ),
            {"at": now},
        )
        # cus_D's period ends in six hours; it was compared before the period started.
        connection.execute(
            text(
                "UPDATE subscriptions SET current_period_start = :start, current_period_end = :end "
                "WHERE stripe_customer_id = 'cus_D'"
            ),
            {"start": now - timedelta(days=30), "end": now + timedelta(hours=6)},
        )
        connection.execute(
            text(
                "INSERT INTO billing.reconciled_pairs (meter, stripe_customer_id, "
                "last_compared_at, drift) VALUES "
                "('temperature_readings', 'cus_C', :hour_ago, false), "
                "('temperature_readings', 'cus_D', :month_ago, false), "
                "('temperature_readings', 'cus_E', :hour_ago, true), "
                "('temperature_readings', 'cus_F', :hour_ago, false), "
                "('temperature_readings', 'cus_H', :hour_ago, false)"
            ),
            {"hour_ago": now - timedelta(hours=1), "month_ago": now - timedelta(days=31)},
        )

    found = candidates(engine, ["temperature_readings"], day, TODAY, now)

    assert {c.pair[1]: c.reason for c in found} == {
        "cus_A": "ledger_attention",  # failed, never compared
        "cus_B": "correction",  # a second revision, never compared
        "cus_C": "subscription_change",
        "cus_D": "period_closing",
        "cus_E": "open_drift",
        "cus_F": None,  # compared an hour ago, nothing since
        "cus_G": None,  # never compared, nothing wrong: the rotation's
        "cus_H": None,  # failed before its last comparison: already looked at
    }
    coverage = select_pairs(found, RotationPolicy(daily_calls=3, rotation_days=4), 0, now)
    assert [customer for _, customer in coverage.reasons] == ["cus_E", "cus_A", "cus_B"]
    assert coverage.anomalies_left == 1  # cus_C waits for tomorrow's budget
    assert coverage.never_compared_left == 1  # cus_G
    assert coverage.oldest_left_age_days == 31  # cus_D
    assert coverage.overdue_left == 1
    assert coverage.rotation_quota == 2
    assert not coverage.budget_covers_rotation
