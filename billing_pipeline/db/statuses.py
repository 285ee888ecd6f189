"""The vocabularies of the pipeline's own tables: every state a ledger row or inbox event can take.

They are `StrEnum`s, so a member is the very string stored in Postgres (and checked by the
tables' CHECK constraints in `schema.py`), and a typo is a NameError instead of a silent miss.
"""

from __future__ import annotations

from enum import StrEnum


class LedgerStatus(StrEnum):
    """Where one meter ledger row (one revision of a meter, Stripe customer and day) stands."""

    PENDING = "pending"  # planned, not yet known to Stripe
    SENT = "sent"  # Stripe accepted it (or already held this identifier, hence this value)
    FAILED = "failed"  # the last attempt failed (4xx or transient); retried by the next run
    EXPIRED = "expired"  # outside Stripe's 35-day window: never sent, never clamped
    REJECTED = (
        "rejected"  # accepted, then refused asynchronously; billed again under a new revision
    )
    # Raw `sum` meters only: attempted more than ~23 h ago and never confirmed, so Stripe no
    # longer deduplicates its identifier. Never resent; settled against Stripe's daily totals.
    IN_DOUBT = "in_doubt"
    ABSENT = "absent"  # settled: Stripe's totals show it never arrived; billed again
    SUPERSEDED = "superseded"  # full-value meters: a newer revision carries the day's value
    # Raw `sum` meters only, for a downward correction (never sent as a negative value: Stripe's
    # references disagree on whether one is accepted). `cancelling`: sent, and to be cancelled
    # with a meter event adjustment before anything else of its customer's meter is sent;
    # `cancelled`: Stripe confirmed the cancel (or had already cancelled it), it no longer counts.
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    # A downward correction Stripe can no longer make (its events are past the 24 h cancel
    # window): never sent, not counted; its value is what the customer is over-billed by.
    UNCORRECTABLE = "uncorrectable"


# Rows whose value Stripe holds or will hold: what planning builds the next revision on.
COUNTED_STATUSES = (
    LedgerStatus.PENDING,
    LedgerStatus.SENT,
    LedgerStatus.FAILED,
    LedgerStatus.EXPIRED,
    LedgerStatus.IN_DOUBT,
)
# Rows a run sends.
UNSENT_STATUSES = (LedgerStatus.PENDING, LedgerStatus.FAILED)


class InboxStatus(StrEnum):
    """Where one stored Stripe webhook event stands."""

    PENDING = "pending"  # stored, not yet applied
    PROCESSED = "processed"  # applied to `subscriptions` (or the ledger)
    IGNORED = "ignored"  # a type we do not handle, or nothing of ours to change
    FAILED = "failed"  # the handler failed; retried later
    DEAD_LETTER = "dead_letter"  # failed too often; shown by a check until requeued


class SendOutcome(StrEnum):
    """What one delivery pass did with a ledger row: the counts of the reporting step's metadata.

    Not a table's state (a row Stripe `already_sent` is stored `sent`; one `claimed_elsewhere` is
    left as it was), hence a vocabulary of its own.
    """

    SENT = "sent"
    ALREADY_SENT = "already_sent"
    FAILED = "failed"
    EXPIRED = "expired"
    IN_DOUBT = "in_doubt"
    CLAIMED_ELSEWHERE = "claimed_elsewhere"  # another sender holds its lease: left to it
    CANCELLED = "cancelled"
    CANCEL_REFUSED = "cancel_refused"  # past Stripe's 24 h cancel window
    DEFERRED = "deferred"  # not attempted: the pass stopped (breaker), left for the next attempt


OPEN_INBOX_STATUSES = (InboxStatus.PENDING, InboxStatus.FAILED)


class DraftOutcome(StrEnum):
    """What one verification of a draft invoice found (`billing.draft_verifications`)."""

    VERIFIED = "verified"  # every metered line holds what the source says
    # A line differs after the run sent what it could; looked at again at the last look.
    GAP = "gap"
    # A line still differed at the last look before finalization: recorded, never retried.
    UNFIXABLE = "unfixable"


class AlertDeliveryStatus(StrEnum):
    """Where one alert stands for one sink (billing_pipeline/alerts/deliveries.py)."""

    PENDING = "pending"  # recorded, not delivered yet (or retried after a failed attempt)
    SENT = "sent"  # the sink answered 2xx: never sent again
    FAILED = "failed"  # every attempt failed; given up, kept with the last error
