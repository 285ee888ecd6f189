"""Which (meter, customer) pairs a reconciliation run asks Stripe about, within a daily budget.

Each pair costs one summaries read for the whole window (`value_grouping_window=day`). Asking
about every pair every day would cost (customers x meters) reads a day, growing with the
customer base, while Stripe allows about 100 reads/s in live mode (25 in test mode) for the
whole account. So a run asks, in this order, until the day's budget of reads is spent:

1. pairs whose last comparison found a drift (asked again every day until it is gone), and
   pairs with an anomaly since they were last compared: ledger rows failed, rejected (Stripe's
   meter error reports), in doubt, absent, being cancelled or uncorrectable; corrections (a
   revision after the first, a cancel); a subscription change of the customer (a start, an end,
   a move of an organization to another customer). They are checked the day they appear;
2. pairs whose customer's billing period ends within a day and that were not compared since it
   started, so a drift is found before the period's invoice finalizes;
3. the rotation: the least recently compared pairs (never compared first) with what is left of
   the budget. Oldest first, ceil(pairs / rotation_days) of them a day are enough for every pair
   to be compared at least once every `rotation_days` days with the daily run, whatever happened
   to it; `budget_covers_rotation` says whether the budget left that many after the anomalies.

A pair counts as compared (`billing.reconciled_pairs.last_compared_at`, with whether it
drifted) once a read found none of its days still settling; the reads of every run of a UTC day
are added up in `billing.reconciliation_calls`, so the budget holds however often the job is
launched. The
coverage says who was asked and why, and what was left: pairs not asked, anomalies waiting, pairs
never compared, the oldest comparison age and the pairs overdue.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, text

from billing_pipeline import config
from billing_pipeline.db.statuses import LedgerStatus
from billing_pipeline.stripe_reporting.identifiers import day_start

Pair = tuple[str, str]  # (meter, Stripe customer)

OPEN_DRIFT = "open_drift"
ATTENTION = "ledger_attention"
CORRECTION = "correction"
SUBSCRIPTION_CHANGE = "subscription_change"
PERIOD_CLOSING = "period_closing"
ROTATION = "rotation"
REASONS = (OPEN_DRIFT, ATTENTION, CORRECTION, SUBSCRIPTION_CHANGE, PERIOD_CLOSING, ROTATION)
ANOMALIES = (OPEN_DRIFT, ATTENTION, CORRECTION, SUBSCRIPTION_CHANGE)

ATTENTION_STATUSES = (
    LedgerStatus.FAILED,
    LedgerStatus.REJECTED,
    LedgerStatus.IN_DOUBT,
    LedgerStatus.ABSENT,
    LedgerStatus.CANCELLING,
    LedgerStatus.UNCORRECTABLE,
)
CORRECTION_STATUSES = (LedgerStatus.CANCELLED,)
# A period ending this soon is compared before its invoice: the daily run is the last chance.
CLOSING_HORIZON = timedelta(days=1)


@dataclass(frozen=True)
class RotationPolicy:
    """The bounds an operator sets (environment, see README "Backfills, late data and checks")."""

    daily_calls: int = 10_000
    rotation_days: int = 28
    reads_per_second: int = 20

    @classmethod
    def from_environment(cls) -> RotationPolicy:
        return cls(
            daily_calls=config.env_positive_int(config.RECONCILIATION_DAILY_CALLS, 10_000),
            rotation_days=config.env_positive_int(config.RECONCILIATION_ROTATION_DAYS, 28),
            reads_per_second=config.env_positive_int(config.RECONCILIATION_READS_PER_SECOND, 20),
        )


@dataclass(frozen=True)
class Candidate:
    """A pair with ledger rows in the window, when it was last compared and why it is due."""

    pair: Pair
    last_compared_at: datetime | None
    reason: str | None  # an anomaly or PERIOD_CLOSING; None: only the rotation's turn


@dataclass
class Coverage:
    """Who a run asks about (in order, with the reason) and what it leaves for later runs.

    `calls_made` and `compared` (each pair compared: whether it drifted) are filled in as the
    reads are made."""

    policy: RotationPolicy = field(default_factory=RotationPolicy)
    pairs_total: int = 0
    customers_total: int = 0
    reasons: dict[Pair, str] = field(default_factory=dict)
    calls_before: int = 0
    rotation_quota: int = 0
    rotation_candidates: int = 0  # pairs due by the rotation only (no anomaly, no closing)
    anomalies_left: int = 0
    never_compared_left: int = 0
    oldest_left_age_days: int | None = None
    overdue_left: int = 0
    calls_made: int = 0
    compared: dict[Pair, bool] = field(default_factory=dict)
    stopped: str | None = None

    @property
    def budget_covers_rotation(self) -> bool:
        """Whether the rotation got its daily share after the anomalies and closing periods
        (or every pair that had none): the N-day guarantee holds while this stays true."""
        return self.by_reason()[ROTATION] >= min(self.rotation_quota, self.rotation_candidates)

    @property
    def allowed(self) -> int:
        """Reads this run may make: the day's budget less what earlier runs of the day made."""
        return max(0, self.policy.daily_calls - self.calls_before)

    def by_reason(self) -> dict[str, int]:
        counts = dict.fromkeys(REASONS, 0)
        for reason in self.reasons.values():
            counts[reason] += 1
        return counts


def select_pairs(
    candidates: Sequence[Candidate], policy: RotationPolicy, calls_before: int, now: datetime
) -> Coverage:
    """Anomalies, then closing periods, then the rotation's oldest, within the day's budget."""
    coverage = Coverage(
        policy=policy,
        pairs_total=len(candidates),
        customers_total=len({c.pair[1] for c in candidates}),
        calls_before=calls_before,
        rotation_quota=math.ceil(len(candidates) / policy.rotation_days),
    )

    never = datetime.min.replace(tzinfo=now.tzinfo)

    def age_order(candidate: Candidate) -> tuple[datetime, Pair]:
        return (candidate.last_compared_at or never, candidate.pair)

    ordered = sorted(candidates, key=age_order)
    picks = [c for reason in (*ANOMALIES, PERIOD_CLOSING) for c in ordered if c.reason == reason]
    rotation = [c for c in ordered if c.reason is None]
    coverage.rotation_candidates = len(rotation)
    for candidate in [*picks, *rotation][: coverage.allowed]:
        coverage.reasons[candidate.pair] = candidate.reason or ROTATION

    overdue_before = now - timedelta(days=policy.rotation_days)
    for candidate in candidates:
        if candidate.pair in coverage.reasons:
            continue
        if candidate.reason in ANOMALIES:
            coverage.anomalies_left += 1
        if candidate.last_compared_at is None:
            coverage.never_compared_left += 1
            continue
        age = (now - candidate.last_compared_at).days
        coverage.oldest_left_age_days = max(coverage.oldest_left_age_days or 0, age)
        if candidate.last_compared_at <= overdue_before:
            coverage.overdue_left += 1
    return coverage


# Every pair with ledger rows in the window, its last comparison, and the first reason that
# applies since then (anomalies from the ledger and the subscription history, then a period that
# ends within the horizon and has not been compared since it started). One pass over the
# window's ledger grouped by pair, then hash joins of one row per pair or customer: no per-row
# join and no per-pair subquery, so it stays linear in the ledger.
_CANDIDATES_SQL = """
WITH ledger AS (
    SELECT meter, stripe_customer_id AS customer,
           max(updated_at) FILTER (WHERE status = ANY(:attention)) AS attention_at,
           max(updated_at) FILTER (WHERE revision > 1 OR status = ANY(:corrections))
               AS correction_at
    FROM billing.meter_ledger
    WHERE meter = ANY(:meters) AND day >= :first_day AND day < :end_day
    GROUP BY meter, stripe_customer_id
),
changed AS (
    SELECT s.stripe_customer_id AS customer, max(h.recorded_at) AS changed_at
    FROM billing.subscription_status_history h
    JOIN subscriptions s ON s.stripe_subscription_id = h.stripe_subscription_id
    WHERE h.recorded_at >= :window_start
    GROUP BY s.stripe_customer_id
),
closing AS (
    SELECT stripe_customer_id AS customer, max(current_period_start) AS period_start
    FROM subscriptions
    WHERE current_period_end > :now AND current_period_end <= :closing_before
    GROUP BY stripe_customer_id
)
SELECT l.meter, l.customer, r.last_compared_at,
       CASE WHEN r.drift THEN :drift_reason
            WHEN l.attention_at >= coalesce(r.last_compared_at, '-infinity')
                 THEN :attention_reason
            WHEN l.correction_at >= coalesce(r.last_compared_at, '-infinity')
                 THEN :correction_reason
            WHEN c.changed_at >= coalesce(r.last_compared_at, '-infinity')
                 THEN :subscription_reason
            WHEN k.period_start > coalesce(r.last_compared_at, '-infinity')
                 THEN :closing_reason
       END AS reason
FROM ledger l
LEFT JOIN billing.reconciled_pairs r
       ON r.meter = l.meter AND r.stripe_customer_id = l.customer
LEFT JOIN changed c ON c.customer = l.customer
LEFT JOIN closing k ON k.customer = l.customer
"""


def candidates(
    engine: Engine, meters: Collection[str], first_day: date, end_day: date, now: datetime
) -> list[Candidate]:
    """The pairs the window's ledger holds, with their last comparison and due reason (SQL)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(_CANDIDATES_SQL),
            {
                "meters": list(meters),
                "first_day": first_day,
                "end_day": end_day,
                "window_start": day_start(first_day),
                "now": now,
                "closing_before": now + CLOSING_HORIZON,
                "attention": list(ATTENTION_STATUSES),
                "corrections": list(CORRECTION_STATUSES),
                "drift_reason": OPEN_DRIFT,
                "attention_reason": ATTENTION,
                "correction_reason": CORRECTION,
                "subscription_reason": SUBSCRIPTION_CHANGE,
                "closing_reason": PERIOD_CLOSING,
            },
        )
        return [Candidate((r.meter, r.customer), r.last_compared_at, r.reason) for r in rows]


def calls_made_on(engine: Engine, day: date) -> int:
    """The summary reads every reconciliation run of `day` (UTC) made so far."""
    with engine.connect() as connection:
        calls = connection.execute(
            text("SELECT calls FROM billing.reconciliation_calls WHERE day = :day"), {"day": day}
        ).scalar()
    return int(calls or 0)


def record_run(engine: Engine, coverage: Coverage, now: datetime) -> None:
    """Add the run's reads to its day and stamp the pairs it compared, in one transaction."""
    with engine.begin() as connection:
        if coverage.calls_made:
            connection.execute(
                text(
                    "INSERT INTO billing.reconciliation_calls (day, calls) VALUES (:day, :calls) "
                    "ON CONFLICT (day) DO UPDATE "
                    "SET calls = billing.reconciliation_calls.calls + EXCLUDED.calls"
                ),
                {"day": now.date(), "calls": coverage.calls_made},
            )
        if coverage.compared:
            pairs = sorted(coverage.compared)
            connection.execute(
                text(
                    "INSERT INTO billing.reconciled_pairs (meter, stripe_customer_id, "
                    "last_compared_at, drift) "
                    "SELECT meter, customer, :at, drift "
                    "FROM unnest(:meters, :customers, :drifts) AS p (meter, customer, drift) "
                    "ON CONFLICT (meter, stripe_customer_id) DO UPDATE "
                    "SET last_compared_at = EXCLUDED.last_compared_at, drift = EXCLUDED.drift"
                ),
                {
                    "meters": [meter for meter, _ in pairs],
                    "customers": [customer for _, customer in pairs],
                    "drifts": [coverage.compared[pair] for pair in pairs],
                    "at": now,
                },
            )
