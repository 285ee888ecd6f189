"""Which customers a reconciliation run asks Stripe about, so its cost stays bounded.

Reconciliation costs one summaries call per (meter, customer), so asking about every customer
every day grows with the customer base. Most customers' days do not change once billed: a
difference can only appear where something happened (the ledger sent or changed rows, or the
source no longer matches what the ledger says Stripe holds) or where someone else touched Stripe,
which nothing on our side can see. So each run checks every customer with activity or a source
change, plus a deterministic seventh of the rest (a stable hash of the customer id against the
day since the epoch): a daily run covers every customer at least once a week, and the cost of a
run is the active customers plus a seventh of the idle ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

ROTATION_DAYS = 7
EPOCH = date(1970, 1, 1)

ACTIVITY = "activity"
SOURCE_CHANGED = "source_changed"
ROTATION = "rotation"
REASONS = (ACTIVITY, SOURCE_CHANGED, ROTATION)


def rotation_slot(customer: str) -> int:
    """The day of the rotation (0..6) a customer is checked on; stable across processes (Python's
    own `hash` of a str is salted per process)."""
    digest = hashlib.sha256(customer.encode()).digest()
    return int.from_bytes(digest[:8], "big") % ROTATION_DAYS


def days_since_slot(customer: str, today: date) -> int:
    """Days since the customer's rotation slot last came up (0 when it is today)."""
    return ((today - EPOCH).days - rotation_slot(customer)) % ROTATION_DAYS


@dataclass(frozen=True)
class Coverage:
    """The customers a run checks, why, and how stale the least recently checked one is."""

    total: int
    reasons: dict[str, str] = field(default_factory=dict)  # customer -> first reason that applies
    oldest_check_age_days: int = 0

    @property
    def checked(self) -> frozenset[str]:
        return frozenset(self.reasons)

    def by_reason(self) -> dict[str, int]:
        return {reason: sum(1 for r in self.reasons.values() if r == reason) for reason in REASONS}


def select_customers(
    customers: Iterable[str], active: set[str], source_changed: set[str], today: date
) -> Coverage:
    """Every active or changed customer, plus those whose rotation slot is `today`.

    `oldest_check_age_days` is the largest number of days since any customer not checked today
    was last due by rotation: with the daily schedule running, no customer waits longer."""
    everyone = set(customers)
    reasons: dict[str, str] = {}
    oldest = 0
    for customer in sorted(everyone):
        age = days_since_slot(customer, today)
        if customer in active:
            reasons[customer] = ACTIVITY
        elif customer in source_changed:
            reasons[customer] = SOURCE_CHANGED
        elif age == 0:
            reasons[customer] = ROTATION
        else:
            oldest = max(oldest, age)
    return Coverage(total=len(everyone), reasons=reasons, oldest_check_age_days=oldest)
