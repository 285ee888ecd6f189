"""Planning: write the revisions that bring Stripe to the source, per customer, meter and part.

A part is a UTC day, or the piece of one between billing boundaries (`attribution.py`).

Every run plans a whole range of days from the same attribution reconciliation checks against
(`attribution.py`): a day whose organization moved to another customer gets a reversal for the
old customer and the value for the new one, a day that had no customer is billed once one
appears, and a day with nothing left to change plans nothing. Revisions are numbered past every
row of the (meter, customer, part), whatever its status, so no earlier row can block a later one.
A part that has not started yet (the rest of today after a period end) is left for a later run:
its stamp would lie in the future, which Stripe refuses.

- Raw `sum` meters (Stripe's `event_time_window` null) send differences.
- Raw `last` meters and pre-aggregated meters (`event_time_window=day`) send the whole value;
  older unsent revisions of the day are superseded, never sent after their successor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import Connection, Engine, text

from billing_pipeline.db.statuses import COUNTED_STATUSES
from billing_pipeline.db.transactions import in_transaction
from billing_pipeline.stripe_reporting.attribution import attribution_params, customer_parts_cte
from billing_pipeline.stripe_reporting.identifiers import stamp_range
from billing_pipeline.stripe_reporting.ledger import (
    LedgerRow,
    insert_rows,
    new_row,
    supersede_unsent,
)
from billing_pipeline.stripe_reporting.ordering import reassert_rows
from billing_pipeline.usage.meters import Meter


@dataclass(frozen=True)
class MeterTarget:
    """A declared meter and the kind of Stripe meter it reports to."""

    meter: Meter
    # Stripe's `event_time_window` (None: raw meter; "day": pre-aggregated per UTC day).
    window: str | None

    @property
    def sends_whole_values(self) -> bool:
        return self.window is not None or self.meter.aggregation == "last"


@dataclass(frozen=True)
class _CustomerPart:
    customer: str
    part_start: datetime
    part_end: datetime
    target: int
    organization_ids: list[int]
    has_usage: bool
    last_revision: int
    counted_sum: int
    counted_target: int | None
    last_timestamp: datetime | None


_STATE_SQL = """
WITH {parts},
ledger AS (
    SELECT stripe_customer_id AS customer, part_start,
           max(part_end) AS part_end,
           max(revision) AS last_revision,
           max(event_timestamp) AS last_timestamp,
           (SELECT n.organization_ids FROM billing.meter_ledger n
            WHERE n.meter = :meter AND n.stripe_customer_id = m.stripe_customer_id
              AND n.part_start = m.part_start
            ORDER BY n.revision DESC LIMIT 1) AS organization_ids,
           coalesce(sum(value) FILTER (
               WHERE status = ANY(:counted) AND event_name = :event_name), 0)::bigint
               AS counted_sum,
           (array_agg(target_value ORDER BY revision DESC) FILTER (
               WHERE status = ANY(:counted) AND event_name = :event_name))[1] AS counted_target
    FROM billing.meter_ledger m
    WHERE meter = :meter AND day >= :first_day AND day < :end_day
    GROUP BY stripe_customer_id, part_start
),
states AS (
    SELECT coalesce(c.customer, l.customer) AS customer,
           coalesce(c.part_start, l.part_start) AS part_start,
           coalesce(c.part_end, l.part_end) AS part_end,
           coalesce(c.target, 0) AS target,
           coalesce(c.organization_ids, l.organization_ids) AS organization_ids,
           c.customer IS NOT NULL AS has_usage,
           coalesce(l.last_revision, 0) AS last_revision,
           coalesce(l.counted_sum, 0) AS counted_sum, l.counted_target, l.last_timestamp
    FROM customer_parts c
    FULL JOIN ledger l ON l.customer = c.customer AND l.part_start = c.part_start
)
-- Only the parts that need a revision reach Python (the same rules as `_next_revision`), so
-- a run that re-plans Stripe's whole window holds what changed, not every organization.
SELECT * FROM states
WHERE CASE WHEN CAST(:whole_values AS boolean) THEN
          CASE WHEN counted_target IS NULL
               THEN target <> 0 OR (has_usage AND CAST(:gauge AS boolean))
               ELSE counted_target <> target END
      ELSE target <> counted_sum END
ORDER BY customer, part_start
"""


def plan_window(
    engine: Engine | Connection,
    target: MeterTarget,
    first_day: date,
    end_day: date,
    now: datetime | None = None,
    until: datetime | None = None,
) -> list[LedgerRow]:
    """Write the revisions that bring Stripe to the stored daily usage; return the new rows.

    Serialised per meter with a transaction-scoped advisory lock, so two plans of overlapping
    days write one revision, not two: the second sees the first's rows and finds nothing left.
    Given a connection, it plans inside the caller's transaction (the dry run rolls it back).
    `until` (a period-close run) plans only the parts that end by then: the closing part of the
    period goes out at once, the rest of its day is left to the daily run.
    """
    now = now or datetime.now(UTC)
    meter = target.meter
    with in_transaction(engine) as connection:
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('billing.plan'), hashtext(:meter))"),
            {"meter": meter.name},
        )
        states = [
            _CustomerPart(**row._mapping)
            for row in connection.execute(
                text(_STATE_SQL.format(parts=customer_parts_cte(meter))),
                {
                    **attribution_params(meter, target.window, first_day, end_day),
                    "event_name": meter.event_name,
                    "counted": list(COUNTED_STATUSES),
                    "whole_values": target.sends_whole_values,
                    "gauge": meter.aggregation == "last",
                },
            )
        ]
        planned = [
            row
            for state in states
            if stamp_range(state.part_start, state.part_end, target.window)[0] <= now
            and (until is None or state.part_end <= until)
            and (row := _next_revision(target, state, now))
        ]
        if target.sends_whole_values:
            supersede_unsent(connection, meter.name, planned)
        insert_rows(connection, planned)
        if target.window is None and meter.aggregation == "last":
            reassert = reassert_rows(connection, meter, first_day, end_day, now)
            insert_rows(connection, reassert)
            planned += reassert
    return planned


def _next_revision(target: MeterTarget, state: _CustomerPart, now: datetime) -> LedgerRow | None:
    if target.sends_whole_values:
        if state.counted_target is None:
            # Nothing sent yet: a 0 is worth sending only for a gauge that has usage rows (its
            # sensors are all gone, so the period's last value must drop).
            if state.target == 0 and not (state.has_usage and target.meter.aggregation == "last"):
                return None
        elif state.counted_target == state.target:
            return None
        value = state.target
    else:
        value = state.target - state.counted_sum
        if value == 0:
            return None
    return new_row(
        target.meter,
        target.window,
        state.customer,
        (state.part_start, state.part_end),
        state.last_revision + 1,
        value,
        state.target,
        state.organization_ids,
        now,
        state.last_timestamp,
    )
