"""Rows claimed by lease: a sender killed mid-send holds its rows until the lease expires, then
the same identifiers go out again and Stripe holds each event once, for v1 and the v2 stream.

Ledger rows are written directly (planning is covered elsewhere); the sender, Postgres and the
emulator over HTTP are real, and the killed sender is a separate process ended by SIGKILL.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from billing_pipeline.db.engine import make_engine
from billing_pipeline.db.statuses import UNSENT_STATUSES, LedgerStatus, SendOutcome
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.leases import claim
from billing_pipeline.stripe_reporting.ledger import LedgerRow, insert_rows, unsent_rows
from billing_pipeline.stripe_reporting.meter_errors import (
    ReportedError,
    mark_reported_rows_rejected,
)
from billing_pipeline.stripe_reporting.sender import MeterEventApi, send_rows
from billing_pipeline.usage.meters import TEMPERATURE_READINGS
from billing_pipeline_tests.support.builders import pending_day_row
from billing_pipeline_tests.support.stripe import TEST_KEY, new_customer
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

LEASE = timedelta(seconds=3)
TODAY = datetime.now(UTC).date()
FIRST, END = TODAY - timedelta(days=10), TODAY + timedelta(days=1)


def _send_in_own_process(database_url: str, api_base: str, api: MeterEventApi) -> None:
    engine = make_engine(database_url, pool_size=2)
    rows = unsent_rows(engine, [TEMPERATURE_READINGS.name], FIRST, END)
    send_rows(engine, StripeBilling(TEST_KEY, api_base), rows, concurrency=2, api=api, lease=LEASE)


def _leased(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM billing.meter_ledger WHERE lease_expires_at > now()")
            ).scalar_one()
        )


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_killed_senders_rows_go_out_once_after_its_lease_expires(
    api: MeterEventApi,
    engine: Engine,
    database_url: str,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
) -> None:
    rows = [
        pending_day_row(customer, TODAY - timedelta(days=d), 10 + n, n)
        for n, customer in enumerate(new_customer(stripe_billing, f"C{n}") for n in range(5))
        for d in range(8, 0, -1)
    ]
    with engine.begin() as connection:
        insert_rows(connection, rows)
    emulator_control.set_faults(latency_ms=300)
    process = multiprocessing.get_context("spawn").Process(
        target=_send_in_own_process, args=(database_url, emulator_server.url, api)
    )
    process.start()
    deadline = time.monotonic() + 60
    while not emulator_control.meter_events():  # killed in the middle of sending
        assert time.monotonic() < deadline, "the sender never sent anything"
        time.sleep(0.05)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    emulator_control.set_faults()
    leased = _leased(engine)

    # While the dead sender's leases last, its rows (and, to keep each customer's order, the
    # rows after them) are left alone.
    early = send_rows(engine, stripe_billing, _unsent(engine), api=api, lease=LEASE)
    assert early.counts[SendOutcome.CLAIMED_ELSEWHERE] >= leased
    time.sleep(LEASE.total_seconds())
    send_rows(engine, stripe_billing, _unsent(engine), api=api, lease=LEASE)

    held = Counter(event["identifier"] for event in emulator_control.meter_events())
    assert held == Counter(row.identifier for row in rows)  # every event once
    with engine.connect() as connection:
        statuses = connection.execute(
            text("SELECT status, count(*) FROM billing.meter_ledger GROUP BY status")
        ).all()
    assert dict(statuses) == {"sent": len(rows)}


def _unsent(engine: Engine) -> list[LedgerRow]:
    return unsent_rows(engine, [TEMPERATURE_READINGS.name], FIRST, END)


def _leases(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT identifier, lease_owner FROM billing.meter_ledger"))
        return {row.identifier: row.lease_owner for row in rows}


@pytest.mark.parametrize("status", list(LedgerStatus))
def test_a_row_leaving_the_unsent_statuses_loses_its_lease_whatever_moved_it(
    status: LedgerStatus, engine: Engine
) -> None:
    """Whatever statement settles a leased row (planning superseding it, a meter error report
    rejecting it, ...), no lease outlives it; a row still unsent keeps its sender's lease."""
    row = pending_day_row("cus_lease", TODAY - timedelta(days=1), 5, 1)
    with engine.begin() as connection:
        insert_rows(connection, [row])
    assert claim(engine, [row.identifier], "sender-a", timedelta(minutes=10))
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE billing.meter_ledger SET status = :status WHERE identifier = :id"),
            {"status": status, "id": row.identifier},
        )
    expected = "sender-a" if status in UNSENT_STATUSES else None
    assert _leases(engine) == {row.identifier: expected}


def test_rows_a_meter_error_report_rejects_mid_send_keep_no_lease(engine: Engine) -> None:
    """The reported rows are rejected while a sender holds them; the sender's outcome is then
    not written (the report wins) and nothing is left leased."""
    rows = [pending_day_row("cus_lease", TODAY - timedelta(days=d), d, 1) for d in (1, 2)]
    with engine.begin() as connection:
        insert_rows(connection, rows)
    claim(engine, [r.identifier for r in rows], "sender-a", timedelta(minutes=10))
    with engine.begin() as connection:
        errors = [ReportedError(rows[0].identifier, "archived_meter", "meter archived")]
        mark_reported_rows_rejected(connection, "evt_report", errors)
    assert _leases(engine) == {rows[0].identifier: None, rows[1].identifier: "sender-a"}
