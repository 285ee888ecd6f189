"""Meter error reports applied to the ledger: which rows change, and which never do."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from billing_pipeline.stripe_reporting.meter_errors import (
    MalformedErrorReportError,
    ReportedError,
    mark_reported_rows_rejected,
    reported_errors,
)
from billing_pipeline_tests.support.builders import add_ledger_row


def error_report(*samples: tuple[str, str]) -> dict[str, Any]:
    """A full `v1.billing.meter.error_report_triggered` event, one error type per code."""
    codes: dict[str, list[str]] = {}
    for code, identifier in samples:
        codes.setdefault(code, []).append(identifier)
    return {
        "id": "evt_test_1",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "data": {
            "developer_message_summary": "errors",
            "reason": {
                "error_count": len(samples),
                "error_types": [
                    {
                        "code": code,
                        "error_count": len(ids),
                        "sample_errors": [
                            {"error_message": f"bad {i}", "request": {"identifier": i}} for i in ids
                        ],
                    }
                    for code, ids in codes.items()
                ],
            },
        },
    }


def test_reads_every_sample_with_its_code() -> None:
    event = error_report(("meter_event_customer_not_found", "a"), ("archived_meter", "b"))

    assert reported_errors(event) == [
        ReportedError("a", "meter_event_customer_not_found", "bad a"),
        ReportedError("b", "archived_meter", "bad b"),
    ]


def test_an_event_without_error_types_is_refused() -> None:
    with pytest.raises(MalformedErrorReportError):
        reported_errors({"data": {"developer_message_summary": "no reason"}})


def test_marks_sent_and_pending_rows_rejected_and_leaves_the_rest(engine: Engine) -> None:
    sent = add_ledger_row(engine, 1, "sent", customer="cus_1")
    pending = add_ledger_row(engine, 2, "pending", customer="cus_2")
    superseded = add_ledger_row(engine, 3, "superseded", customer="cus_3")
    expired = add_ledger_row(engine, 4, "expired", customer="cus_4")
    untouched = add_ledger_row(engine, 5, "sent", customer="cus_5")
    samples = [("meter_event_customer_not_found", i) for i in (sent, pending, superseded, expired)]
    errors = reported_errors(error_report(*samples, ("no_meter", "someone-elses-event")))

    with engine.begin() as connection:
        marked = mark_reported_rows_rejected(connection, "evt_test_1", errors)

    assert marked == sorted([sent, pending])
    with engine.connect() as connection:
        rows = {
            row.identifier: row
            for row in connection.execute(
                text(
                    "SELECT identifier, status, error_code, status_reason FROM billing.meter_ledger"
                )
            )
        }
    assert rows[sent].status == rows[pending].status == "rejected"
    assert rows[sent].error_code == "meter_event_customer_not_found"
    assert "evt_test_1" in rows[sent].status_reason and "bad " in rows[sent].status_reason
    # Never sent, so Stripe's report cannot be about them: their state and reason stay.
    assert (rows[superseded].status, rows[expired].status) == ("superseded", "expired")
    assert rows[untouched].status == "sent"
