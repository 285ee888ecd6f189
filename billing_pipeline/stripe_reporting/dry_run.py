"""The dry run: what the next real run would send, per meter, customer and day, and why.

It recomputes the daily usage a run of those days recomputes (`usage/<meter>`, from the source
rows: a late reading or a back-dated sensor counts as it will in the run), runs the very planning
a real run runs (`planning.plan_window`) and reads the rows a run would then send
(`ledger.unsent_rows`), all on one connection whose transaction it then rolls back: the usage
and the ledger are unchanged and no meter event reaches Stripe. Only the reason is worked out
here, by comparing each row with the ledger as it stood before the plan.

Raw `sum` rows a real run would first mark in doubt (attempted more than 23 h ago, unconfirmed)
are not listed as sent: a real run settles them against Stripe's summaries instead, which the
dry run only counts (settling reads Stripe and writes the ledger).

Raw `sum` events a real run would cancel first (usage went down, `cancels.py`) are listed apart;
the rows that wait for those cancels are listed as sent, as they are once the cancels succeed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import Connection, Engine, text

from billing_pipeline.db.statuses import UNSENT_STATUSES, LedgerStatus
from billing_pipeline.stripe_reporting.in_doubt import DEDUPE_SAFE
from billing_pipeline.stripe_reporting.ledger import COLUMNS, REASSERT, LedgerRow, unsent_rows
from billing_pipeline.stripe_reporting.planning import MeterTarget, plan_window
from billing_pipeline.usage.daily_usage import refresh_daily_usage

Key = tuple[str, str, date]  # (meter, customer, day)


@dataclass(frozen=True)
class WouldSend:
    """One meter event the next run would send, and why."""

    row: LedgerRow
    why: str


@dataclass(frozen=True)
class DryRun:
    would_send: list[WouldSend]
    expired: list[LedgerRow]  # planned but outside Stripe's window: never sent
    to_settle: int  # in-doubt rows a real run would settle against Stripe's summaries
    # Raw `sum` events a real run cancels before sending (usage went down).
    to_cancel: list[LedgerRow] = field(default_factory=list)
    # Decreases past Stripe's cancel window: recorded, never sent.
    uncorrectable: list[LedgerRow] = field(default_factory=list)


@dataclass(frozen=True)
class _Prior:
    identifier: str
    status: str
    target_value: int
    organization_ids: list[int]


_PRIOR_SQL = """
SELECT meter, stripe_customer_id AS customer, day, identifier, status, target_value,
       organization_ids
FROM billing.meter_ledger
WHERE meter = ANY(:meters) AND day >= :first_day AND day < :end_day
ORDER BY revision
"""

_TO_SETTLE_SQL = """
SELECT identifier, status = :in_doubt AS already
FROM billing.meter_ledger
WHERE meter = ANY(:meters) AND aggregation_window IS NULL
  AND (status = :in_doubt OR (status = ANY(:unsent) AND first_attempted_at < :cutoff))
"""


def dry_run(
    engine: Engine,
    targets: Sequence[MeterTarget],
    first_day: date,
    end_day: date,
    now: datetime | None = None,
    recomputed: tuple[date, date] | None = None,
) -> DryRun:
    """Plan [first_day, end_day) as a real run would, roll back, and explain each event.

    `recomputed`: the days whose usage the run recomputes first (its partitions, when the run
    materializes the usage assets too, as the schedules and backfills do); None when the usage
    is already as the run will find it (the run-config dry run, after its usage steps)."""
    now = now or datetime.now(UTC)
    names = [t.meter.name for t in targets]
    window = {"meters": names, "first_day": first_day, "end_day": end_day}
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            if recomputed is not None:
                start, end = (datetime.combine(d, datetime.min.time(), UTC) for d in recomputed)
                for target in targets:
                    refresh_daily_usage(connection, target.meter, start, end)
            prior: dict[Key, list[_Prior]] = defaultdict(list)
            for row in connection.execute(text(_PRIOR_SQL), window):
                prior[(row.meter, row.customer, row.day)].append(
                    _Prior(row.identifier, row.status, row.target_value, list(row.organization_ids))
                )
            differences = [t.meter.name for t in targets if not t.sends_whole_values]
            settle = _to_settle(connection, differences, now)
            planned = [
                row
                for t in targets
                for row in plan_window(connection, t, first_day, end_day, now, keep_rows=True).rows
            ]
            to_cancel = _cancel_as_a_run_would(connection, names)
            unsent = [
                row
                for row in unsent_rows(connection, names, first_day, end_day)
                if row.identifier not in settle
            ]
        finally:
            # Nothing planned here may outlive the dry run.
            transaction.rollback()
    return DryRun(
        would_send=[WouldSend(row, _why(row, prior, planned)) for row in unsent],
        expired=[row for row in planned if row.status == LedgerStatus.EXPIRED],
        to_settle=len(settle),
        to_cancel=to_cancel,
        uncorrectable=[row for row in planned if row.status == LedgerStatus.UNCORRECTABLE],
    )


def _cancel_as_a_run_would(connection: Connection, meters: Sequence[str]) -> list[LedgerRow]:
    """The events a real run cancels before sending, marked cancelled inside the dry run's
    transaction so that the rows waiting for them are read as the run sends them."""
    rows = connection.execute(
        text(
            f"UPDATE billing.meter_ledger SET status = :cancelled "
            f"WHERE status = :cancelling AND meter = ANY(:meters) RETURNING {COLUMNS}"
        ),
        {
            "cancelled": LedgerStatus.CANCELLED,
            "cancelling": LedgerStatus.CANCELLING,
            "meters": list(meters),
        },
    )
    return sorted(
        (LedgerRow(*row) for row in rows),
        key=lambda r: (r.stripe_customer_id, r.part_start, r.revision),
    )


def _to_settle(connection: Connection, meters: Sequence[str], now: datetime) -> set[str]:
    rows = connection.execute(
        text(_TO_SETTLE_SQL),
        {
            "in_doubt": LedgerStatus.IN_DOUBT,
            "unsent": list(UNSENT_STATUSES),
            "meters": list(meters),
            "cutoff": now - DEDUPE_SAFE,
        },
    )
    return {row.identifier for row in rows}


def _why(row: LedgerRow, prior: dict[Key, list[_Prior]], planned: Sequence[LedgerRow]) -> str:
    history = prior.get((row.meter, row.stripe_customer_id, row.day), [])
    earlier = next((p for p in history if p.identifier == row.identifier), None)
    if earlier is not None:
        return (
            "retry after a failure"
            if earlier.status == LedgerStatus.FAILED
            else "unsent from a run"
        )
    if row.status_reason == REASSERT:
        return "re-assert (the day's value must arrive last)"
    organizations = set(row.organization_ids)
    if row.target_value == 0:
        moved_to = sorted(
            p.stripe_customer_id
            for p in planned
            if (p.meter, p.day) == (row.meter, row.day)
            and p.stripe_customer_id != row.stripe_customer_id
            and organizations & set(p.organization_ids)
        )
        if moved_to:
            return f"reversal: customer move to {', '.join(moved_to)}"
        return "reversal: no billable subscription for this day any more"
    if not history:
        moved_from = sorted(
            customer
            for (meter, customer, day), rows in prior.items()
            if (meter, day) == (row.meter, row.day)
            and customer != row.stripe_customer_id
            and organizations & set(rows[-1].organization_ids)
        )
        if moved_from:
            return f"customer move from {', '.join(moved_from)}"
        return "new day"
    latest = history[-1]
    if latest.status == LedgerStatus.ABSENT:
        return "in-doubt settlement: never arrived, billed again"
    if latest.status == LedgerStatus.REJECTED:
        return "re-bill: Stripe rejected the previous revision"
    return f"correction: source {latest.target_value} → {row.target_value}"
