"""Reconcile Stripe with the source, per meter, Stripe customer and UTC day.

The source (daily usage attributed to customers by `attribution.py`, the very SQL planning uses)
says what Stripe should hold; Stripe's meter event summaries (`value_grouping_window=day`) say
what it does hold. The ledger only explains a difference: a day with rows still unsent, in
doubt, or changed within the settle window is "settling" (Stripe's summaries lag, the next run
sends the rest); anything else is drift: an event Stripe dropped or refused later, an event
someone else sent for our customer, a correction that expired outside Stripe's window.

For a raw `sum` meter the ledger's own view is the sum of its sent values, for raw `last` and
pre-aggregated meters the newest sent revision's value; both are shown beside each drift.

Not every (meter, customer) is asked about every run: `reconciliation_coverage.py` picks the
pairs with anomalies first, then periods about to close, then a rotation of the least recently
compared, within a daily budget of reads that `summary_reads.py` paces under Stripe's rate limit.
Only the picked customers' source and ledger are read, and both are indexed by pair once, so the
Python work grows with the pairs asked about, not with the customer base.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import UNSENT_STATUSES, LedgerStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.attribution import (
    CUSTOMER_VALUE_SQL,
    attribution_params,
    customer_parts_cte,
)
from billing_pipeline.stripe_reporting.identifiers import day_start
from billing_pipeline.stripe_reporting.reconciliation_coverage import (
    Coverage,
    Pair,
    RotationPolicy,
    calls_made_on,
    candidates,
    record_run,
    select_pairs,
)
from billing_pipeline.stripe_reporting.summary_reads import BudgetExhaustedError, PacedReads
from billing_pipeline.usage.meters import Meter

SETTLE_WINDOW = timedelta(minutes=30)
# One day's verdict; a pair is stamped compared only when none of its days is still settling.
MATCH, SETTLING, DRIFT = "match", "settling", "drift"
# Stripe reports float totals; our values are whole numbers.
TOLERANCE = 1e-6

Key = tuple[str, str, date]  # (meter, customer, day)


@dataclass(frozen=True)
class LedgerView:
    """What the ledger says Stripe holds for one (meter, customer, day), and whether it is final."""

    held: int
    organizations: tuple[int, ...]
    settling: bool
    last_change: datetime


@dataclass(frozen=True)
class Drift:
    meter: str
    customer: str
    day: date
    organizations: tuple[int, ...]
    source: int
    ledger: int
    stripe: float


@dataclass
class Reconciliation:
    """The outcome for one day: how much was compared, what is settling, what drifted."""

    compared: int = 0
    settling: int = 0
    drifts: list[Drift] = field(default_factory=list)
    missing_meters: list[str] = field(default_factory=list)
    # Who the run asked Stripe about, and what it left (shared by every day of one run).
    coverage: Coverage = field(default_factory=Coverage)

    @property
    def ok(self) -> bool:
        return not self.drifts and not self.missing_meters


# A customer's day from its parts, as Stripe's daily summary aggregates it, and the union of
# the parts' organizations (apart: unnesting them beside the values would count a part once
# per organization). Only the parts ended by `:now`: planning reports no other (today's
# partial day, after a period-close run, holds parts not over yet).
_CUSTOMER_DAYS_SQL = f"""
WITH {{parts}},
ended_parts AS (
    SELECT * FROM customer_parts
    WHERE part_end <= :now AND (:every_customer OR customer = ANY(:customers))
),
day_values AS (
    SELECT customer, day, {CUSTOMER_VALUE_SQL} AS target
    FROM ended_parts GROUP BY customer, day
),
day_organizations AS (
    SELECT customer, day, array_agg(DISTINCT organization_id ORDER BY organization_id)
               AS organization_ids
    FROM ended_parts CROSS JOIN LATERAL unnest(organization_ids) AS o (organization_id)
    GROUP BY customer, day
)
SELECT v.customer, v.day, v.target, o.organization_ids
FROM day_values v JOIN day_organizations o ON o.customer = v.customer AND o.day = v.day
"""


def source_targets(
    engine: Engine,
    meters: Sequence[Meter],
    windows: dict[str, str | None],
    first_day: date,
    end_day: date,
    now: datetime,
    customers: Collection[str] | None = None,
) -> dict[Key, tuple[int, tuple[int, ...]]]:
    """The attributed source value of every (meter, customer, day) with usage in the window,
    over the parts ended by `now`, of `customers` (None: every customer); `windows` is each
    meter's Stripe `event_time_window` (it decides whether days are cut)."""
    targets: dict[Key, tuple[int, tuple[int, ...]]] = {}
    with engine.connect() as connection:
        for meter in meters:
            rows = connection.execute(
                text(_CUSTOMER_DAYS_SQL.format(parts=customer_parts_cte(meter))),
                {
                    **attribution_params(meter, windows.get(meter.name), first_day, end_day),
                    "last": meter.aggregation == "last",
                    "now": now,
                    **_customer_filter(customers),
                },
            )
            for row in rows:
                targets[(meter.name, row.customer, row.day)] = (
                    int(row.target),
                    tuple(row.organization_ids),
                )
    return targets


def _customer_filter(customers: Collection[str] | None) -> dict[str, Any]:
    return {"every_customer": customers is None, "customers": sorted(customers or ())}


# Per slot first (a whole-value revision replaces only its own slot: the part, or on an hourly
# meter the hour window, as planning keys them), then per day: `sum` meters add the slots (raw
# ones their sent differences), `last` meters hold the latest slot's.
_LEDGER_SQL = """
WITH parts AS (
    SELECT meter, stripe_customer_id AS customer, day,
           CASE WHEN aggregation_window = 'hour' THEN date_trunc('hour', event_timestamp, 'UTC')
                ELSE part_start END AS slot,
           coalesce(sum(value) FILTER (WHERE status = :sent), 0) AS sent_sum,
           (array_agg(target_value ORDER BY event_timestamp DESC, revision DESC)
               FILTER (WHERE status = :sent))[1] AS newest_sent_target,
           bool_or(status = ANY(:unsettled)) OR max(updated_at) >= :settled_before AS settling,
           max(updated_at) AS last_change
    FROM billing.meter_ledger m
    WHERE meter = ANY(:meters) AND day >= :first_day AND day < :end_day
      AND (:every_customer OR stripe_customer_id = ANY(:customers))
    GROUP BY 1, 2, 3, 4
)
SELECT meter, customer, day,
       CAST(CASE WHEN meter = ANY(:last_meters)
                 THEN (array_agg(coalesce(newest_sent_target, 0) ORDER BY slot DESC))[1]
                 WHEN meter = ANY(:whole_meters) THEN sum(coalesce(newest_sent_target, 0))
                 ELSE sum(sent_sum) END AS bigint) AS held,
       bool_or(settling) AS settling,
       max(last_change) AS last_change
FROM parts p
GROUP BY meter, customer, day
"""
# The organizations of each (meter, customer, day)'s newest row, in one pass over the window: a
# subquery per output row let the planner scan a whole day per row on an unanalyzed ledger.
_LEDGER_VIEWS_SQL = f"""
SELECT v.*, o.organization_ids AS organizations
FROM ({_LEDGER_SQL}) AS v
JOIN (
    SELECT DISTINCT ON (meter, stripe_customer_id, day)
           meter, stripe_customer_id AS customer, day, organization_ids
    FROM billing.meter_ledger
    WHERE meter = ANY(:meters) AND day >= :first_day AND day < :end_day
      AND (:every_customer OR stripe_customer_id = ANY(:customers))
    ORDER BY meter, stripe_customer_id, day, part_start DESC, revision DESC
) AS o USING (meter, customer, day)
"""


def _ledger_params(
    meters: Sequence[Meter],
    windows: dict[str, str | None],
    first_day: date,
    end_day: date,
    settled_before: datetime,
    customers: Collection[str] | None = None,
) -> dict[str, Any]:
    return {
        **_customer_filter(customers),
        "sent": LedgerStatus.SENT,
        "unsettled": [*UNSENT_STATUSES, LedgerStatus.IN_DOUBT],
        "meters": [m.name for m in meters],
        "last_meters": [m.name for m in meters if m.aggregation == "last"],
        "whole_meters": [m.name for m in meters if windows.get(m.name) is not None],
        "first_day": first_day,
        "end_day": end_day,
        "settled_before": settled_before,
    }


def ledger_views(
    engine: Engine,
    meters: Sequence[Meter],
    windows: dict[str, str | None],
    first_day: date,
    end_day: date,
    settled_before: datetime,
    customers: Collection[str] | None = None,
) -> dict[Key, LedgerView]:
    """What the ledger says Stripe holds, for `customers` (None: every customer); `windows` is
    each meter's Stripe `event_time_window`."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(_LEDGER_VIEWS_SQL),
            _ledger_params(meters, windows, first_day, end_day, settled_before, customers),
        ).all()
    return {
        (row.meter, row.customer, row.day): LedgerView(
            held=int(row.held),
            organizations=tuple(row.organizations),
            settling=bool(row.settling),
            last_change=row.last_change,
        )
        for row in rows
    }


def day_totals(
    engine: Engine,
    meters: Sequence[Meter],
    windows: dict[str, str | None],
    first_day: date,
    end_day: date,
    now: datetime | None = None,
) -> dict[tuple[str, date], tuple[int, int]]:
    """Per (meter, day): the attributed source total (parts ended by `now`) and what the ledger
    says Stripe holds, summed over customers in the database (a day's metadata must not hold
    every customer)."""
    now = now or datetime.now(UTC)
    totals: dict[tuple[str, date], tuple[int, int]] = {}
    with engine.connect() as connection:
        for meter in meters:
            window = windows.get(meter.name)
            source = connection.execute(
                text(
                    "SELECT day, sum(target) AS total FROM ("
                    + _CUSTOMER_DAYS_SQL.format(parts=customer_parts_cte(meter))
                    + ") AS customer_days GROUP BY day"
                ),
                {
                    **attribution_params(meter, window, first_day, end_day),
                    "last": meter.aggregation == "last",
                    "now": now,
                    **_customer_filter(None),
                },
            )
            for row in source:
                totals[(meter.name, row.day)] = (int(row.total), 0)
        held = connection.execute(
            text(
                "SELECT meter, day, sum(held) AS total FROM ("
                + _LEDGER_SQL
                + ") AS views GROUP BY meter, day"
            ),
            _ledger_params(meters, windows, first_day, end_day, now),
        )
        for row in held:
            source_total, _ = totals.get((row.meter, row.day), (0, 0))
            totals[(row.meter, row.day)] = (source_total, int(row.total))
    return totals


def reconcile(
    engine: Engine,
    billing: StripeBilling,
    meters: Sequence[Meter],
    first_day: date,
    end_day: date,
    *,
    settle_window: timedelta = SETTLE_WINDOW,
    now: datetime | None = None,
    policy: RotationPolicy | None = None,
) -> dict[date, Reconciliation]:
    """Compare the source with Stripe for [first_day, end_day), one outcome per day (every day
    of the window, also one with nothing to compare), one summaries read per (meter, customer)
    the coverage picks, for the whole window. A meter missing in Stripe fails every day: none of
    its days can be compared. `now` decides what is settling and stamps the comparisons; without
    `policy` the environment's budget, rotation and pace apply."""
    now = now or datetime.now(UTC)
    policy = policy or RotationPolicy.from_environment()
    remote = {m.event_name: m for m in billing.list_meters() if m.status == "active"}
    windows = {
        m.name: remote[m.event_name].event_time_window for m in meters if m.event_name in remote
    }
    coverage = select_pairs(
        candidates(engine, [m.name for m in meters], first_day, end_day, now),
        policy,
        calls_made_on(engine, now.date()),
        now,
    )
    outcomes = {
        first_day + timedelta(days=n): Reconciliation(coverage=coverage)
        for n in range((end_day - first_day).days)
    }
    asked = {customer for _, customer in coverage.reasons}
    targets = source_targets(engine, meters, windows, first_day, end_day, now, asked)
    ledger = ledger_views(engine, meters, windows, first_day, end_day, now - settle_window, asked)
    days_of: dict[Pair, set[date]] = defaultdict(set)
    for meter_name, customer, day in itertools.chain(targets, ledger):
        days_of[(meter_name, customer)].add(day)
    by_name = {meter.name: meter for meter in meters}
    missing = sorted({m for m, _ in coverage.reasons if by_name[m].event_name not in remote})
    for outcome in outcomes.values():
        outcome.missing_meters.extend(missing)
    reads = PacedReads(policy.reads_per_second, coverage.allowed)
    bounds = (day_start(first_day), day_start(end_day))
    try:
        for meter_name, customer in coverage.reasons:
            if meter_name in missing:
                continue
            remote_id = remote[by_name[meter_name].event_name].id
            try:
                stripe_days = reads.read(
                    functools.partial(billing.daily_totals, remote_id, customer, *bounds)
                )
            except BudgetExhaustedError:
                coverage.stopped = "budget spent"
                break
            except stripe.RateLimitError:
                coverage.stopped = "rate limited"
                break
            days = days_of[(meter_name, customer)] | {d for d, v in stripe_days.items() if v}
            verdicts = [
                _compare(outcomes[day], (meter_name, customer, day), targets, ledger, stripe_days)
                for day in sorted(days)
            ]
            if SETTLING not in verdicts:
                coverage.compared[(meter_name, customer)] = DRIFT in verdicts
    finally:
        coverage.calls_made = reads.calls
        record_run(engine, coverage, now)
    return outcomes


def _compare(
    result: Reconciliation,
    key: Key,
    targets: dict[Key, tuple[int, tuple[int, ...]]],
    ledger: dict[Key, LedgerView],
    stripe_days: dict[date, float],
) -> str:
    """Record one day's comparison: MATCH, SETTLING (not final yet) or DRIFT."""
    source, organizations = targets.get(key, (0, ()))
    view = ledger.get(key)
    stripe_value = stripe_days.get(key[2], 0.0)
    result.compared += 1
    if abs(stripe_value - source) <= TOLERANCE:
        return MATCH
    if view is not None and view.settling:
        result.settling += 1
        return SETTLING
    result.drifts.append(
        Drift(
            meter=key[0],
            customer=key[1],
            day=key[2],
            organizations=organizations or (view.organizations if view else ()),
            source=source,
            ledger=view.held if view else 0,
            stripe=stripe_value,
        )
    )
    return DRIFT
