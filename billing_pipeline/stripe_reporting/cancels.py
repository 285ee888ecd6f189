"""Raw `sum` meters: downward corrections without a negative meter event value.

Stripe's references disagree on negative values (the v2 stream's errors say "The value must be
a positive integer", v1 states no rule), so the pipeline never sends one. A slot whose usage
went down is corrected by cancelling its counted events and sending its whole new value:

- planning (`planning.py`) marks the slot's sent events `cancelling` (rows never attempted are
  simply never sent: `superseded`) and plans the slot's whole new value as a new revision, when
  it is above 0. A slot with an unconfirmed row (in flight, in doubt) waits for it;
- before anything is sent, `cancel_rows` cancels each `cancelling` event with a meter event
  adjustment (`type=cancel`); "already cancelled" is the outcome wanted. A customer's meter
  sends nothing while one of its events still awaits its cancel (`ledger.unsent_chunks`), so
  the whole new value never arrives beside the events it replaces;
- Stripe cancels only within 24 h of receiving an event. A slot whose events are older is
  recorded `uncorrectable` (never sent, not counted, listed by `ledger_failed_rows` and
  `billing-pipeline status`): the customer is over-billed by its value until an operator credits
  them (docs/operations.md). A cancel Stripe refuses as too late puts its event back to `sent`
  and drops the replacements not yet sent, so the next plan records the slot uncorrectable;
  when an earlier attempt's outcome was unknown (a timeout), the event is put in doubt instead
  and settled against Stripe's daily totals (`in_doubt.py`: still held → `sent`, gone →
  `absent`).

Upward corrections stay positive differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import stripe
from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import UNSENT_STATUSES, LedgerStatus, SendOutcome
from billing_pipeline.stripe_client import TRANSIENT_ERRORS, CancelOutcome, StripeBilling
from billing_pipeline.stripe_reporting.in_doubt import DEDUPE_SAFE
from billing_pipeline.stripe_reporting.ledger import COLUMNS, LedgerRow
from billing_pipeline.stripe_reporting.sender import SendReport

# Stripe cancels events up to 24 h after receiving them; the in-doubt rule's hour of margin,
# counted from the first attempt (Stripe received the event after it).
CANCEL_SAFE = DEDUPE_SAFE
# error_code of a cancelling row whose last cancel attempt has an unknown outcome.
CANCEL_UNCONFIRMED = "cancel_unconfirmed"
# error_code of a sent row Stripe refused to cancel as too late: never planned for a cancel again.
CANCEL_WINDOW_PASSED = "cancel_window_passed"

CANCEL_REASON = "usage went down: cancelled with a meter event adjustment, never sent negative"
REPLACES_REASON = "the whole new value of a slot whose earlier events are cancelled"
UNCORRECTABLE_REASON = (
    "usage went down after Stripe's 24 h cancel window: not sent (a negative value may be "
    "refused); the customer is over-billed by -value. Credit the customer, or move the meter "
    "to an hourly pre-aggregated meter (docs/operations.md)"
)
CANCEL_REFUSED = "Stripe refused the cancel as too late, so it still counts this event"
REPLACEMENT_DROPPED = "not sent: a cancel it depended on was refused; the next plan decides again"
CANCEL_IN_DOUBT = (
    "a cancel attempt's outcome is unknown and Stripe's 24 h have passed: settled against "
    "Stripe's daily summary (arrived = still counted, never arrived = cancelled)"
)


def downward_params(now: datetime) -> dict[str, Any]:
    """The parameters planning's statement needs for downward corrections."""
    return {
        "sent": LedgerStatus.SENT,
        "in_doubt": LedgerStatus.IN_DOUBT,
        "cancelling": LedgerStatus.CANCELLING,
        "uncorrectable": LedgerStatus.UNCORRECTABLE,
        "cancel_since": now - CANCEL_SAFE,
        "cancel_window_passed": CANCEL_WINDOW_PASSED,
        "cancel_reason": CANCEL_REASON,
        "replaces_reason": REPLACES_REASON,
        "uncorrectable_reason": UNCORRECTABLE_REASON,
    }


def cancel_rows(engine: Engine, billing: StripeBilling, meters: Sequence[str]) -> SendReport:
    """Cancel every `cancelling` event of `meters` at Stripe and record each outcome."""
    report = SendReport()
    with engine.connect() as connection:
        rows = [
            (LedgerRow(*row[:-1]), row[-1])
            for row in connection.execute(
                text(
                    f"SELECT {COLUMNS}, error_code FROM billing.meter_ledger "
                    "WHERE status = :cancelling AND meter = ANY(:meters) "
                    "ORDER BY stripe_customer_id, part_start, revision"
                ),
                {"cancelling": LedgerStatus.CANCELLING, "meters": list(meters)},
            ).all()
        ]
    for row, error_code in rows:
        _cancel(engine, billing, report, row, error_code)
    return report


def _cancel(
    engine: Engine, billing: StripeBilling, report: SendReport, row: LedgerRow, error_code: Any
) -> None:
    try:
        result = billing.cancel_meter_event(event_name=row.event_name, identifier=row.identifier)
    except TRANSIENT_ERRORS as error:
        message = f"cancel: {type(error).__name__}: {_message(error)} (will retry)"
        report.record(row, SendOutcome.FAILED, message, transient=True)
        _write(engine, row, LedgerStatus.CANCELLING, message, CANCEL_UNCONFIRMED)
        return
    if result.outcome is CancelOutcome.CANCELLED:
        report.record(row, SendOutcome.CANCELLED)
        _write(engine, row, LedgerStatus.CANCELLED, f"{CANCEL_REASON}: confirmed", None)
    elif result.outcome is CancelOutcome.TOO_LATE:
        report.record(row, SendOutcome.CANCEL_REFUSED)
        if error_code == CANCEL_UNCONFIRMED:
            _write(engine, row, LedgerStatus.IN_DOUBT, CANCEL_IN_DOUBT, None)
        else:
            reason = f"{CANCEL_REFUSED}: {result.message}"
            _write(engine, row, LedgerStatus.SENT, reason, CANCEL_WINDOW_PASSED)
        _drop_replacements(engine, row)
    else:
        message = f"Stripe refused the cancel: {result.message}"
        report.record(row, SendOutcome.FAILED, message)
        _write(engine, row, LedgerStatus.CANCELLING, message, result.code or "cancel_refused")


def _write(engine: Engine, row: LedgerRow, status: str, reason: str, code: str | None) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE billing.meter_ledger SET status = :status, status_reason = :reason, "
                "error_code = :code, updated_at = now() "
                "WHERE identifier = :identifier AND status = :cancelling"
            ),
            {
                "status": status,
                "reason": reason,
                "code": code,
                "identifier": row.identifier,
                "cancelling": LedgerStatus.CANCELLING,
            },
        )


def _drop_replacements(engine: Engine, row: LedgerRow) -> None:
    """The day's unsent rows of the customer's meter may count on the refused cancel: none is
    sent; the next plan re-plans the day from what Stripe really holds."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE billing.meter_ledger SET status = :superseded, status_reason = :reason, "
                "updated_at = now() "
                "WHERE meter = :meter AND stripe_customer_id = :customer AND day = :day "
                "AND status = ANY(:unsent) AND first_attempted_at IS NULL"
            ),
            {
                "superseded": LedgerStatus.SUPERSEDED,
                "reason": REPLACEMENT_DROPPED,
                "meter": row.meter,
                "customer": row.stripe_customer_id,
                "day": row.day,
                "unsent": list(UNSENT_STATUSES),
            },
        )


def _message(error: stripe.StripeError) -> str:
    return error.user_message or str(error) or type(error).__name__
