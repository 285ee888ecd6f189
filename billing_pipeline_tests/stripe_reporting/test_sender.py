"""Sending chunk after chunk: every row goes out once, each customer's rows in their order, and
nothing is left leased.

Ledger rows are written directly (planning is covered elsewhere); the sender, Postgres and the
emulator over HTTP are real.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.ledger import insert_rows, unsent_chunks
from billing_pipeline.stripe_reporting.sender import MeterEventApi, send_chunks
from billing_pipeline.usage.meters import TEMPERATURE_READINGS
from billing_pipeline_tests.support.builders import pending_day_row
from billing_pipeline_tests.support.stripe import new_customer
from stripe_emulator.control import EmulatorControl

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
