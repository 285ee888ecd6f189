"""Stripe's asynchronous meter errors, applied to the ledger: the one place that knows them.

Stripe accepts a meter event with 200 and validates some rules later (unknown customer, archived
meter, ...); events sent through the v2 meter event stream are validated only this way. It then
sends a thin event `v1.billing.meter.error_report_triggered` whose full body lists error codes
with sample requests, each naming the event's `identifier`. Our identifiers are
the ledger's primary key, so the rows Stripe refused are marked `rejected` with Stripe's code.
They are not resent: Stripe already holds their identifiers and would answer "duplicate", which
would read as delivered. The next reporting run of that day bills the amount again under a new
revision (after the cause, e.g. a missing customer, is fixed), and the failed-rows check shows
them until a later revision is sent.

Stripe lists *samples*, not necessarily every failing event of a window: rows it did not name are
caught by the reconciliation check instead (Stripe's total falls short of the ledger's).

A thin event carries only an id and a type; the webhook flow fetches its full body from Stripe
(`GET /v2/core/events/{id}`) and hands it to `apply_error_report`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from billing_pipeline.db.statuses import UNSENT_STATUSES, LedgerStatus

ERROR_REPORT_EVENT_TYPES = (
    "v1.billing.meter.error_report_triggered",
    "v1.billing.meter.no_meter_found",
)
REASON_PREFIX = "Stripe reported an asynchronous error"

logger = logging.getLogger(__name__)


class MalformedErrorReportError(ValueError):
    """The fetched event does not have the shape of a meter error report."""


@dataclass(frozen=True)
class ReportedError:
    """One sample request Stripe says it could not bill."""

    identifier: str
    code: str
    message: str


def reported_errors(event: Mapping[str, Any]) -> list[ReportedError]:
    """Read `data.reason.error_types[].sample_errors[].request.identifier` with its code."""
    data = event.get("data")
    reason = data.get("reason") if isinstance(data, Mapping) else None
    error_types = reason.get("error_types") if isinstance(reason, Mapping) else None
    if not isinstance(error_types, list):
        raise MalformedErrorReportError("event has no data.reason.error_types list")
    errors = []
    for error_type in error_types:
        if not isinstance(error_type, Mapping):
            raise MalformedErrorReportError("an error type is not an object")
        code = str(error_type.get("code") or "unknown")
        for sample in error_type.get("sample_errors") or []:
            request = sample.get("request") if isinstance(sample, Mapping) else None
            identifier = request.get("identifier") if isinstance(request, Mapping) else None
            if isinstance(identifier, str) and identifier:
                errors.append(ReportedError(identifier, code, str(sample.get("error_message"))))
    return errors


def mark_reported_rows_rejected(
    connection: Connection, event_id: str, errors: list[ReportedError]
) -> list[str]:
    """Mark the ledger rows Stripe named as `rejected`; return the identifiers that matched.

    Rows already `sent` (Stripe answered 200 before validating) and rows still `pending` or
    `failed` or `in_doubt` are marked; expired and settled rows keep their state.
    Identifiers that are not ours (another integration's events) match nothing.
    """
    if not errors:
        return []
    marked = connection.execute(
        text(
            """
            UPDATE billing.meter_ledger AS l
            SET status = :rejected, error_code = e.code, updated_at = now(),
                status_reason = :prefix || ' (' || :event_id || '): ' || e.message
            FROM unnest(CAST(:identifiers AS text[]), CAST(:codes AS text[]),
                        CAST(:messages AS text[])) AS e(identifier, code, message)
            WHERE l.identifier = e.identifier AND l.status = ANY(:markable)
            RETURNING l.identifier
            """
        ),
        {
            "rejected": LedgerStatus.REJECTED,
            "markable": [LedgerStatus.SENT, LedgerStatus.IN_DOUBT, *UNSENT_STATUSES],
            "prefix": REASON_PREFIX,
            "event_id": event_id,
            "identifiers": [error.identifier for error in errors],
            "codes": [error.code for error in errors],
            "messages": [error.message for error in errors],
        },
    )
    return sorted(marked.scalars())


def apply_error_report(
    connection: Connection, event_id: str, full_event: Mapping[str, Any]
) -> list[str]:
    """Mark the ledger rows a fetched meter error report names, in the caller's transaction.

    Returns the identifiers that were ours; raises MalformedErrorReportError for a body that is
    not a meter error report.
    """
    errors = reported_errors(full_event)
    marked = mark_reported_rows_rejected(connection, event_id, errors)
    logger.info(
        "stripe meter error report %s: %d sample errors, ledger rows marked rejected: %s",
        event_id,
        len(errors),
        ", ".join(marked) or "none of ours",
    )
    return marked
