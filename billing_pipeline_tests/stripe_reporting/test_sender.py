"""Sending chunk after chunk: every row goes out once, each customer's rows in their order, and
nothing is left leased.

Ledger rows are written directly (planning is covered elsewhere); the sender, Postgres and the
emulator over HTTP are real.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import UNSENT_STATUSES, SendOutcome
from billing_pipeline.stripe_client import RetryRule, StripeBilling
from billing_pipeline.stripe_reporting.ledger import insert_rows, unsent_chunks
from billing_pipeline.stripe_reporting.sender import (
    DEFAULT_CONCURRENCY,
    MeterEventApi,
    send_chunks,
)
from billing_pipeline.usage.meters import TEMPERATURE_READINGS
from billing_pipeline_tests.support.builders import pending_day_row
from billing_pipeline_tests.support.stripe import TEST_KEY, new_customer
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

TODAY = datetime.now(UTC).date()
FIRST, END = TODAY - timedelta(days=10), TODAY + timedelta(days=1)
DAYS = 4


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_chunk_after_chunk_each_row_goes_out_once_in_its_customers_order(
    api: MeterEventApi,
    engine: Engine,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
) -> None:
    customers = [new_customer(stripe_billing, f"C{n}") for n in range(6)]
    rows = [
        pending_day_row(customer, TODAY - timedelta(days=d), 100 * n + d, n)
        for n, customer in enumerate(customers)
        for d in range(DAYS, 0, -1)
    ]
    with engine.begin() as connection:
        insert_rows(connection, rows)
    # Slow answers, so each customer's calls overlap the others' (v1: one worker per customer).
    emulator_control.set_faults(latency_ms=50)

    # A chunk holds one customer: six chunks, each claimed, sent and written in turn.
    chunks = unsent_chunks(engine, [TEMPERATURE_READINGS.name], FIRST, END, chunk_rows=DAYS)
    report = send_chunks(engine, stripe_billing, chunks, api=api, concurrency=4)

    assert report.counts == Counter(sent=len(rows))
    held = emulator_control.meter_events()
    assert Counter(event["identifier"] for event in held) == Counter(r.identifier for r in rows)
    for customer in customers:
        arrived = [e["identifier"] for e in held if e["payload"]["stripe_customer_id"] == customer]
        planned = [row.identifier for row in rows if row.stripe_customer_id == customer]
        assert arrived == planned  # days ascending, as `last` by arrival needs
    with engine.connect() as connection:
        left = connection.execute(
            text(
                "SELECT status, count(*), count(lease_owner) FROM billing.meter_ledger "
                "GROUP BY status"
            )
        ).all()
    assert [tuple(row) for row in left] == [("sent", len(rows), 0)]


@pytest.mark.parametrize(("api", "limit"), [("v1", 20), ("v2", 3)])
def test_a_full_stripe_outage_stops_the_pass_within_seconds_and_loses_nothing(
    api: MeterEventApi,
    limit: int,
    engine: Engine,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
) -> None:
    """With the production retry policy each failing call spends seconds; the breaker stops the
    pass after `limit` calls in a row failed, instead of going through all 300 rows. Every row
    is left unsent and unleased, and once Stripe is back one pass bills each exactly once."""
    customers = [new_customer(stripe_billing, f"C{n}") for n in range(30)]
    rows = [
        pending_day_row(customer, TODAY - timedelta(days=d), 10 * n + d, n)
        for n, customer in enumerate(customers)
        for d in range(10, 0, -1)
    ]
    with engine.begin() as connection:
        insert_rows(connection, rows)
    production = StripeBilling(TEST_KEY, emulator_server.url, retry=RetryRule())
    emulator_control.set_faults(error_500_rate=1.0)

    started = time.monotonic()
    chunks = unsent_chunks(engine, [TEMPERATURE_READINGS.name], FIRST, END, chunk_rows=50)
    report = send_chunks(engine, production, chunks, api=api, breaker_failures=limit)
    elapsed = time.monotonic() - started

    assert report.stopped is not None and "consecutive failed" in report.stopped
    assert elapsed < 30, f"the outage took {elapsed:.1f} s to end the pass"
    requests = emulator_control.request_count()["500"]
    assert requests <= (limit + DEFAULT_CONCURRENCY) * RetryRule().attempts
    assert report.counts[SendOutcome.SENT] == 0
    with engine.connect() as connection:
        statuses = connection.execute(
            text(
                "SELECT status, count(*) AS n, count(lease_owner) AS leased "
                "FROM billing.meter_ledger GROUP BY status"
            )
        ).all()
    assert {row.status for row in statuses} <= set(UNSENT_STATUSES)
    assert sum(row.n for row in statuses) == len(rows)
    assert sum(row.leased for row in statuses) == 0

    emulator_control.set_faults()
    chunks = unsent_chunks(engine, [TEMPERATURE_READINGS.name], FIRST, END, chunk_rows=50)
    again = send_chunks(engine, stripe_billing, chunks, api=api, breaker_failures=limit)
    assert again.stopped is None
    held = Counter(event["identifier"] for event in emulator_control.meter_events())
    assert held == Counter(row.identifier for row in rows)
