"""Reading unsent ledger rows a chunk of whole customers at a time, in the order they are sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from billing_pipeline.stripe_reporting.ledger import unsent_chunks, unsent_rows
from billing_pipeline_tests.support.builders import add_ledger_row

TODAY = datetime.now(UTC).date()
FIRST, END = TODAY - timedelta(days=10), TODAY + timedelta(days=1)


def test_chunks_hold_whole_customers_in_send_order_and_skip_what_was_sent(engine: Engine) -> None:
    rows_per_customer = {"cus_A": 3, "cus_B": 1, "cus_C": 5, "cus_D": 2}
    for customer, count in rows_per_customer.items():
        for n in range(count):
            # Days descending as written, so the read order is the query's, not the insert's.
            add_ledger_row(engine, 1, "pending", customer=customer, day=TODAY - timedelta(days=n))
    add_ledger_row(engine, 1, "sent", customer="cus_B", day=TODAY - timedelta(days=5))

    chunks = list(unsent_chunks(engine, ["temperature_readings"], FIRST, END, chunk_rows=4))

    # cus_C alone is longer than a chunk: it is read whole rather than split.
    assert [[row.stripe_customer_id for row in chunk] for chunk in chunks] == [
        ["cus_A"] * 3 + ["cus_B"],
        ["cus_C"] * 5,
        ["cus_D"] * 2,
    ]
    assert all(
        [row.day for row in chunk if row.stripe_customer_id == customer]
        == sorted(row.day for row in chunk if row.stripe_customer_id == customer)
        for chunk in chunks
        for customer in rows_per_customer
    )
    assert [row for chunk in chunks for row in chunk] == unsent_rows(
        engine, ["temperature_readings"], FIRST, END
    )
