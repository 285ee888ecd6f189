"""Planning: write the revisions that bring Stripe to the source, per customer, meter and part.

A part is a UTC day, or the piece of one between billing boundaries (`attribution.py`).

Every run plans a whole range of days from the same attribution reconciliation checks against
(`attribution.py`): a day whose organization moved to another customer gets a reversal for the
old customer and the value for the new one, a day that had no customer is billed once one
appears, and a day with nothing left to change plans nothing. Revisions are numbered past every
row of the (meter, customer, part) and of its slot (below), whatever their status, so no earlier
row can block a later one.
A part that has not ended yet (today's, or the rest of today after a period end) is left for a
later run: its usage is not final, and its stamp could lie in the future, which Stripe refuses.

The revisions are computed and inserted by one statement in the database (identifiers and
timestamps too, `identifiers.py`), so a plan holds no row per organization in Python and the
meter's lock lasts one statement.

Planning compares the source with the ledger per customer and slot, what Stripe keeps apart, so
that a day re-cut by a boundary learned after it was billed converges like any correction:

- Raw `sum` meters (Stripe's `event_time_window` null) send differences, per part, against the
  counted rows whose timestamps lie in that part: the day's old event is corrected in the part,
  hence the period, it actually lies in. A counted row no current part holds is reversed at its
  own instant. A part going down sends no negative difference: its counted events are
  cancelled and its whole new value re-sent, or the decrease is recorded `uncorrectable` past
  Stripe's 24 h cancel window (`cancels.py`).
- Hourly pre-aggregated meters send the whole value per hour window: the part stamped in the
  window now, or 0 for a window no part uses any more. Each revision is stamped later inside the
  window than every earlier row of it, and older unsent rows of the window are superseded.
- Raw `last` meters and `day` windows send the whole value per part; older unsent revisions of
  the part are superseded, never sent after their successor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import Connection, Engine, text

from billing_pipeline.db.statuses import COUNTED_STATUSES, UNSENT_STATUSES, LedgerStatus
from billing_pipeline.db.transactions import in_transaction
from billing_pipeline.stripe_reporting.attribution import attribution_params, customer_parts_cte
from billing_pipeline.stripe_reporting.cancels import downward_params
from billing_pipeline.stripe_reporting.identifiers import (
    identifier_sql,
    timestamp_sql,
)
from billing_pipeline.stripe_reporting.ledger import (
    COLUMNS,
    OUTSIDE_WINDOW,
    STRIPE_WINDOW,
    SUPERSEDED,
    LedgerRow,
    insert_rows,
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


_PLAN_SQL = """
WITH {parts},
-- What Stripe keeps apart, per customer: its "slots". An hourly meter keeps one event per hour
-- window, so its slot is the window (each part has its own, `attribution.py`); a raw `sum`
-- meter adds every event where its timestamp falls, so its slot is the part now holding that
-- instant (an event no part holds any more is its own slot, reversed where it lies); other
-- meters keep whole parts.
current_parts AS (
    SELECT c.*,
           CASE WHEN CAST(:hour_windows AS boolean) THEN date_trunc('hour', c.stamp_start, 'UTC')
                ELSE c.part_start END AS slot
    FROM customer_parts c
),
ledger_rows AS (
    SELECT m.stripe_customer_id AS customer, m.part_start, m.part_end, m.revision, m.status,
           m.event_name, m.value, m.target_value, m.event_timestamp, m.identifier,
           m.first_attempted_at, m.error_code,
           CASE WHEN CAST(:hour_windows AS boolean)
                    THEN date_trunc('hour', m.event_timestamp, 'UTC')
                WHEN CAST(:whole_values AS boolean) THEN m.part_start
                ELSE coalesce(c.part_start, m.event_timestamp) END AS slot
    FROM billing.meter_ledger m
    LEFT JOIN customer_parts c
        ON NOT CAST(:whole_values AS boolean) AND c.customer = m.stripe_customer_id
        AND c.day = m.day AND m.event_timestamp >= c.part_start
        AND m.event_timestamp < c.part_end
    WHERE m.meter = :meter AND m.day >= :first_day AND m.day < :end_day
),
ledger AS (
    SELECT customer, slot,
           max(revision) AS last_revision,
           max(event_timestamp) AS last_timestamp,
           coalesce(sum(value) FILTER (
               WHERE status = ANY(:counted) AND event_name = :event_name), 0)::bigint
               AS counted_sum,
           (array_agg(target_value ORDER BY event_timestamp DESC, revision DESC) FILTER (
               WHERE status = ANY(:counted) AND event_name = :event_name))[1] AS counted_target,
           -- Raw `sum` meters go down without a negative value (`cancels.py`): the counted rows
           -- are cancelled (sent ones, within Stripe's 24 h) or dropped (never attempted ones).
           array_agg(identifier) FILTER (
               WHERE status = ANY(:counted) AND event_name = :event_name) AS counted_identifiers,
           coalesce(bool_and(
               status = :sent AND first_attempted_at >= :cancel_since
               AND error_code IS DISTINCT FROM :cancel_window_passed
               OR status = ANY(:unsent) AND first_attempted_at IS NULL) FILTER (
               WHERE status = ANY(:counted) AND event_name = :event_name), true) AS cancellable,
           bool_or(status = ANY(:unsent) AND first_attempted_at IS NOT NULL
                   OR status = :in_doubt) AS unconfirmed,
           (array_agg(status ORDER BY revision DESC))[1] AS last_status,
           (array_agg(target_value ORDER BY revision DESC))[1] AS last_target,
           -- The part of the slot's newest row: a slot no part holds any more is brought to 0
           -- under it.
           (array_agg(part_start ORDER BY event_timestamp DESC, revision DESC))[1]
               AS last_part_start,
           (array_agg(part_end ORDER BY event_timestamp DESC, revision DESC))[1] AS last_part_end
    FROM ledger_rows
    GROUP BY customer, slot
),
states AS (
    SELECT coalesce(c.customer, l.customer) AS customer,
           coalesce(c.slot, l.slot) AS slot,
           coalesce(c.part_start, l.last_part_start) AS part_start,
           coalesce(c.part_end, l.last_part_end) AS part_end,
           c.stamp_start AS part_stamp_start, c.stamp_end AS part_stamp_end,
           coalesce(c.target, 0) AS target,
           c.organization_ids,
           c.customer IS NOT NULL AS has_usage,
           coalesce(c.held, false) AS held,
           coalesce(l.last_revision, 0) AS last_revision,
           coalesce(l.counted_sum, 0) AS counted_sum, l.counted_target, l.last_timestamp,
           l.counted_identifiers, coalesce(l.cancellable, true) AS cancellable,
           coalesce(l.unconfirmed, false) AS unconfirmed, l.last_status, l.last_target,
           -- A raw `sum` slot going down: cancelled and re-sent whole inside Stripe's window and
           -- its cancel window, else recorded as uncorrectable (`cancels.py`).
           CASE WHEN NOT CAST(:whole_values AS boolean) AND coalesce(c.target, 0) < l.counted_sum
                     AND coalesce(c.stamp_start, l.slot) >= :oldest
                THEN CASE WHEN coalesce(l.cancellable, true) THEN 'cancel' ELSE 'refused' END
           END AS downward
    FROM current_parts c
    FULL JOIN ledger l ON l.customer = c.customer AND l.slot = c.slot
),
needed AS (
    SELECT s.*,
           -- Past every row of the slot and every row of the part, whatever their status: a
           -- spent identifier is never planned again, and the slot's newest row is this one.
           -- Two slots of one part (a window left behind by a part that moved) number apart.
           greatest(s.last_revision, (
               SELECT max(r.revision) FROM billing.meter_ledger r
               WHERE r.meter = :meter AND r.stripe_customer_id = s.customer
                 AND r.day = CAST(s.part_start AT TIME ZONE 'UTC' AS date)
                 AND r.part_start = s.part_start), 0)
               + row_number() OVER (PARTITION BY s.customer, s.part_start ORDER BY s.slot)
               AS revision,
           CASE WHEN CAST(:whole_values AS boolean) OR s.downward = 'cancel' THEN s.target
                ELSE s.target - s.counted_sum END AS value,
           CASE WHEN s.part_stamp_start IS NOT NULL THEN s.part_stamp_start
                WHEN CAST(:hour_windows AS boolean) THEN greatest(s.slot, s.part_start)
                ELSE s.slot END AS stamp_start,
           CASE WHEN s.part_stamp_start IS NOT NULL THEN s.part_stamp_end
                WHEN CAST(:hour_windows AS boolean)
                    THEN least(s.slot + interval '1 hour', s.part_end)
                WHEN CAST(:whole_values AS boolean) THEN s.part_end
                -- A raw event no part holds any more is reversed at its own instant.
                ELSE s.slot + interval '1 second' END AS stamp_end
    FROM states s
    -- A part several subscriptions of the customer would bill gets nothing (attribution.py),
    -- neither a value nor a reversal of what its slots already hold.
    WHERE NOT s.held
      AND NOT EXISTS (
          SELECT 1 FROM customer_parts h
          WHERE h.held AND h.customer = s.customer
            AND h.part_start < s.part_end AND s.part_start < h.part_end)
      AND CASE WHEN CAST(:whole_values AS boolean) THEN
              -- Nothing sent yet: a 0 is worth sending only for a gauge that has usage rows
              -- (its sensors are all gone, so the period's last value must drop).
              CASE WHEN counted_target IS NULL
                   THEN target <> 0 OR (has_usage AND CAST(:gauge AS boolean))
                   ELSE counted_target <> target END
          ELSE target <> counted_sum
               -- A slot going down waits for its unconfirmed rows, and is recorded
               -- uncorrectable once, not on every run.
               AND NOT (downward IS NOT NULL AND unconfirmed)
               AND NOT (downward IS NOT DISTINCT FROM 'refused'
                        AND last_status IS NOT DISTINCT FROM :uncorrectable
                        AND last_target IS NOT DISTINCT FROM target) END
),
stamped AS (
    SELECT n.*, {timestamp} AS event_timestamp
    FROM needed n
    WHERE n.part_end <= :now
),
new_rows AS (
    SELECT {identifier} AS identifier,
           CAST(:meter AS text) AS meter, customer AS stripe_customer_id,
           CAST(part_start AT TIME ZONE 'UTC' AS date) AS day, part_start, part_end, revision,
           CAST(:event_name AS text) AS event_name,
           -- A part left without usage keeps the organizations its last revision summed. Looked
           -- up only for the rows planned: per part of the window it was 40% of a re-plan.
           coalesce(organization_ids, (
               SELECT n.organization_ids FROM billing.meter_ledger n
               WHERE n.meter = :meter AND n.stripe_customer_id = stamped.customer
                 AND n.part_start = stamped.part_start
               ORDER BY n.revision DESC LIMIT 1)) AS organization_ids,
           CAST(:window AS text) AS aggregation_window, value, target AS target_value,
           event_timestamp,
           CASE WHEN event_timestamp < :oldest THEN :expired
                WHEN downward = 'refused' THEN :uncorrectable ELSE :pending END AS status,
           CASE WHEN event_timestamp < :oldest THEN :outside_window
                WHEN downward = 'refused' THEN :uncorrectable_reason
                WHEN downward = 'cancel' THEN :replaces_reason END AS status_reason,
           slot, downward, counted_identifiers
    FROM stamped
),
-- Raw `sum` meters going down: Stripe's events of the slot are cancelled before anything else
-- of the customer's meter is sent, rows never attempted are never sent.
cancelled AS (
    UPDATE billing.meter_ledger l
    SET status = CASE WHEN l.status = :sent THEN :cancelling ELSE :superseded END,
        status_reason = :cancel_reason, updated_at = now()
    FROM new_rows n
    WHERE n.downward = 'cancel' AND n.status = :pending
      AND l.identifier = ANY(n.counted_identifiers)
),
-- Whole-value meters: an older unsent row of the slot sent after its successor would make the
-- stale value the newest by arrival.
superseded AS (
    UPDATE billing.meter_ledger l
    SET status = :superseded, status_reason = :superseded_reason, updated_at = now()
    FROM new_rows n
    WHERE CAST(:whole_values AS boolean) AND l.meter = n.meter
      AND l.stripe_customer_id = n.stripe_customer_id AND l.day = n.day
      AND CASE WHEN CAST(:hour_windows AS boolean)
               THEN date_trunc('hour', l.event_timestamp, 'UTC') = n.slot
               ELSE l.part_start = n.part_start END
      AND l.identifier <> n.identifier AND l.status = ANY(:unsent)
),
inserted AS (
    INSERT INTO billing.meter_ledger ({columns})
    SELECT {columns} FROM new_rows
    WHERE downward IS DISTINCT FROM 'cancel' OR value <> 0
    RETURNING {returning}
)
"""

# A plan that inserts this many rows refreshes the ledger's statistics before anything reads it.
ANALYZE_AFTER_ROWS = 10_000

_COUNTS_SQL = "SELECT day, status, count(*) AS n FROM inserted GROUP BY day, status"
_ROWS_SQL = "SELECT * FROM inserted ORDER BY stripe_customer_id, part_start"


@dataclass
class Plan:
    """What a plan wrote: counts per (day, status), and the rows themselves when asked for."""

    counts: Counter[tuple[date, str]] = field(default_factory=Counter)
    rows: list[LedgerRow] = field(default_factory=list)

    def add(self, rows: Sequence[LedgerRow]) -> None:
        self.counts.update((row.day, row.status) for row in rows)
        self.rows.extend(rows)


def plan_window(
    engine: Engine | Connection,
    target: MeterTarget,
    first_day: date,
    end_day: date,
    now: datetime | None = None,
    *,
    keep_rows: bool = False,
) -> Plan:
    """Write the revisions that bring Stripe to the stored daily usage; count what was written.

    One statement computes and inserts the revisions in the database, so a plan's memory does
    not grow with the number of organizations; `keep_rows` also returns the rows (the dry run
    explains each one). Serialised per meter with a transaction-scoped advisory lock, held for
    that statement only, so two plans of overlapping days write one revision, not two: the
    second sees the first's rows and finds nothing left. Given a connection, it plans inside the
    caller's transaction (the dry run rolls it back). Only the parts that ended by `now` are
    planned: a period-close run during the day sends the closing part of the period at once and
    leaves the rest of the day to the daily run.
    """
    now = now or datetime.now(UTC)
    meter = target.meter
    sql = _PLAN_SQL.format(
        parts=customer_parts_cte(meter),
        timestamp=timestamp_sql("n.stamp_start", "n.stamp_end", ":now", "n.last_timestamp"),
        identifier=identifier_sql("customer", "part_start", "revision", "value"),
        columns=COLUMNS,
        returning=COLUMNS if keep_rows else "day, status",
    )
    plan = Plan()
    with in_transaction(engine) as connection:
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('billing.plan'), hashtext(:meter))"),
            {"meter": meter.name},
        )
        # The statement's cost estimate is high enough for PostgreSQL to JIT-compile it, which
        # took longer than running it (2 of 5 s at 100,000 organizations); it runs once.
        connection.execute(text("SET LOCAL jit = off"))
        result = connection.execute(
            text(sql + (_ROWS_SQL if keep_rows else _COUNTS_SQL)),
            {
                **attribution_params(meter, target.window, first_day, end_day),
                "event_name": meter.event_name,
                "window": target.window,
                "counted": list(COUNTED_STATUSES),
                "unsent": list(UNSENT_STATUSES),
                "whole_values": target.sends_whole_values,
                "gauge": meter.aggregation == "last",
                "now": now,
                "oldest": now - STRIPE_WINDOW,
                "pending": LedgerStatus.PENDING,
                "expired": LedgerStatus.EXPIRED,
                "outside_window": OUTSIDE_WINDOW,
                "superseded": LedgerStatus.SUPERSEDED,
                "superseded_reason": SUPERSEDED,
                **downward_params(now),
            },
        )
        if keep_rows:
            plan.add([LedgerRow(**row._mapping) for row in result])
        else:
            plan.counts.update({(row.day, row.status): int(row.n) for row in result})
        if plan.counts.total() >= ANALYZE_AFTER_ROWS:
            # Autovacuum analyzes later; until then the planner takes the new rows for a few and
            # scans every unsent row where the sender's claims and writes want the primary key.
            connection.execute(text("ANALYZE billing.meter_ledger"))
        if target.window is None and meter.aggregation == "last":
            reassert = reassert_rows(connection, meter, first_day, end_day, now)
            insert_rows(connection, reassert)
            plan.add(reassert)
    return plan


def plan_targets(
    engine: Engine,
    targets: Sequence[MeterTarget],
    first_day: date,
    end_day: date,
    now: datetime | None = None,
) -> Counter[tuple[date, str]]:
    """`plan_window` for every meter, side by side: each meter is one statement in its own
    backend, so a run waits for the slower meter, not for the sum. Counts per (day, status)."""
    now = now or datetime.now(UTC)
    counts: Counter[tuple[date, str]] = Counter()
    with ThreadPoolExecutor(max(1, len(targets)), thread_name_prefix="plan") as pool:
        for plan in pool.map(
            lambda target: plan_window(engine, target, first_day, end_day, now), targets
        ):
            counts += plan.counts
    return counts
