"""The meter-event ledger: the pipeline's record of what Stripe has been told, and the outbox.

Stripe remembers identifiers for about 24 hours; this table remembers them forever, which is what
makes every rerun safe. A row is written (pending, with its deterministic identifier) before the
Stripe call and marked afterwards, so a crash in between resends the same identifier.

A day is billed as a chain of revisions. `sum` meters send differences (their values add up to
the day's aggregate); `last` meters resend the whole value. Skipped rows (no Stripe customer)
record the decision without counting as billed, so a day is billed once the customer appears.
Rejected rows (Stripe reported them invalid after accepting them) do not count as billed either:
their identifier is spent, so the next plan bills the amount again under a new revision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, Engine, text

from billing_pipeline.db.schema import meter_ledger
from billing_pipeline.stripe_reporting.identifiers import event_identifier, event_timestamp
from billing_pipeline.usage.meters import Meter

# Stripe accepts timestamps up to 35 days old; an hour's margin keeps a row planned just inside
# the window from expiring on the wire.
STRIPE_WINDOW = timedelta(days=35) - timedelta(hours=1)

NO_CUSTOMER = "organization has no Stripe customer on this day (free tier)"
OUTSIDE_WINDOW = "day is outside Stripe's 35-day window; not sent (never clamped to another day)"
REASSERT = "resent so the period's `last` value ends on the newest day after an earlier correction"


@dataclass(frozen=True)
class LedgerRow:
    identifier: str
    meter: str
    organization_id: int
    day: date
    revision: int
    event_name: str
    stripe_customer_id: str | None
    value: int
    target_value: int
    event_timestamp: datetime
    status: str
    status_reason: str | None = None


@dataclass(frozen=True)
class _DayState:
    """What the ledger already holds for one (meter, organization, day), next to the target."""

    day: date
    organization_id: int
    target: int
    has_usage: bool
    last_revision: int
    billed_sum: int
    billed_last: int | None
    billed_customer: str | None
    latest_skipped_target: int | None
    latest_is_skipped: bool
    customer: str | None


_STATE_SQL = """
WITH targets AS (
    SELECT day, organization_id, value
    FROM billing.daily_usage
    WHERE meter = :meter AND day >= :first_day AND day < :end_day
),
ledger AS (
    SELECT day, organization_id,
           max(revision) AS last_revision,
           coalesce(sum(value) FILTER (WHERE status NOT IN ('skipped', 'rejected')), 0)
               AS billed_sum,
           (array_agg(target_value ORDER BY revision DESC)
                FILTER (WHERE status NOT IN ('skipped', 'rejected')))[1] AS billed_last,
           (array_agg(stripe_customer_id ORDER BY revision DESC)
                FILTER (WHERE status NOT IN ('skipped', 'rejected')))[1] AS billed_customer,
           (array_agg(target_value ORDER BY revision DESC)
                FILTER (WHERE status = 'skipped'))[1] AS latest_skipped_target,
           (array_agg(status ORDER BY revision DESC))[1] = 'skipped' AS latest_is_skipped
    FROM billing.meter_ledger
    WHERE meter = :meter AND day >= :first_day AND day < :end_day
    GROUP BY day, organization_id
)
SELECT coalesce(t.day, l.day) AS day,
       coalesce(t.organization_id, l.organization_id) AS organization_id,
       coalesce(t.value, 0) AS target,
       t.value IS NOT NULL AS has_usage,
       coalesce(l.last_revision, 0) AS last_revision,
       coalesce(l.billed_sum, 0) AS billed_sum,
       l.billed_last, l.billed_customer, l.latest_skipped_target,
       coalesce(l.latest_is_skipped, false) AS latest_is_skipped,
       c.stripe_customer_id AS customer
FROM targets t
FULL JOIN ledger l ON l.day = t.day AND l.organization_id = t.organization_id
LEFT JOIN LATERAL (
    -- The organization's Stripe customer on that day: billed from its first paid day on.
    SELECT s.stripe_customer_id
    FROM subscriptions s
    WHERE s.organization_id = coalesce(t.organization_id, l.organization_id)
      AND s.stripe_customer_id IS NOT NULL
      AND (s.started_at IS NULL
           OR s.started_at < CAST(coalesce(t.day, l.day) AS timestamptz) + interval '1 day')
      AND (s.ended_at IS NULL OR s.ended_at >= CAST(coalesce(t.day, l.day) AS timestamptz))
    ORDER BY s.started_at DESC NULLS LAST, s.id DESC
    LIMIT 1
) c ON true
ORDER BY 1, 2
"""


def plan_window(
    engine: Engine, meter: Meter, first_day: date, end_day: date, now: datetime | None = None
) -> list[LedgerRow]:
    """Write the revisions that bring Stripe to the stored daily usage; return the new rows.

    Serialised per meter with a transaction-scoped advisory lock, so two runs of the same
    partition plan one revision, not two: the second sees the first's rows and finds no
    difference left.
    """
    now = now or datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('billing.plan'), hashtext(:meter))"),
            {"meter": meter.name},
        )
        states = [
            _DayState(**row._mapping)
            for row in connection.execute(
                text(_STATE_SQL),
                {"meter": meter.name, "first_day": first_day, "end_day": end_day},
            )
        ]
        planned = [row for state in states if (row := _next_revision(meter, state, now))]
        planned += _reassert_newest_days(connection, meter, planned, now)
        _insert(connection, planned)
    return planned


def _next_revision(meter: Meter, state: _DayState, now: datetime) -> LedgerRow | None:
    customer = state.customer or state.billed_customer
    revision = state.last_revision + 1
    if customer is None:
        if state.target == 0 or (
            state.latest_is_skipped and state.latest_skipped_target == state.target
        ):
            return None
        return _row(
            meter,
            state.organization_id,
            state.day,
            revision,
            None,
            state.target,
            state.target,
            "skipped",
            NO_CUSTOMER,
        )
    if meter.aggregation == "sum":
        difference = state.target - state.billed_sum
        if difference == 0:
            return None
        value = difference
    else:
        if state.billed_last == state.target or (state.billed_last is None and not state.has_usage):
            return None
        value = state.target
    return _row(
        meter,
        state.organization_id,
        state.day,
        revision,
        customer,
        value,
        state.target,
        *_send_status(state.day, revision, now),
    )


def _reassert_newest_days(
    connection: Connection, meter: Meter, planned: Sequence[LedgerRow], now: datetime
) -> list[LedgerRow]:
    """After correcting an old day of a `last` meter, resend the organization's newest day.

    Stripe may pick `last` by arrival rather than by timestamp (its docs leave it open). Then a
    correction of an old day would become the period's last value and change what later days
    bill; resending the newest day's value, after the correction, restores it either way.
    """
    if meter.aggregation != "last":
        return []
    corrected: dict[int, date] = {}
    for row in planned:
        if row.status in ("pending", "expired") and row.revision > 1:
            corrected[row.organization_id] = max(
                row.day, corrected.get(row.organization_id, row.day)
            )
    if not corrected:
        return []
    newest = connection.execute(
        text(
            """
            SELECT DISTINCT ON (organization_id)
                   organization_id, day, revision, target_value, stripe_customer_id
            FROM billing.meter_ledger
            WHERE meter = :meter AND organization_id = ANY(:organizations)
              AND status NOT IN ('skipped', 'rejected')
            ORDER BY organization_id, day DESC, revision DESC
            """
        ),
        {"meter": meter.name, "organizations": list(corrected)},
    )
    planned_days = {(row.organization_id, row.day) for row in planned}
    rows = []
    for latest in newest:
        if latest.day <= corrected[latest.organization_id]:
            continue
        if (latest.organization_id, latest.day) in planned_days:
            continue
        revision = latest.revision + 1
        status, reason = _send_status(latest.day, revision, now)
        rows.append(
            _row(
                meter,
                latest.organization_id,
                latest.day,
                revision,
                latest.stripe_customer_id,
                latest.target_value,
                latest.target_value,
                status,
                reason or REASSERT,
            )
        )
    return rows


def _send_status(day: date, revision: int, now: datetime) -> tuple[str, str | None]:
    if event_timestamp(day, revision) < now - STRIPE_WINDOW:
        return "expired", OUTSIDE_WINDOW
    return "pending", None


def _row(
    meter: Meter,
    organization_id: int,
    day: date,
    revision: int,
    customer: str | None,
    value: int,
    target: int,
    status: str,
    reason: str | None,
) -> LedgerRow:
    return LedgerRow(
        identifier=event_identifier(meter.name, organization_id, day, revision),
        meter=meter.name,
        organization_id=organization_id,
        day=day,
        revision=revision,
        event_name=meter.event_name,
        stripe_customer_id=customer,
        value=value,
        target_value=target,
        event_timestamp=event_timestamp(day, revision),
        status=status,
        status_reason=reason,
    )


def _insert(connection: Connection, rows: Iterable[LedgerRow]) -> None:
    # A Core insert lets SQLAlchemy batch many rows per statement ("insertmanyvalues"); a text()
    # executemany is one round trip per row, which made planning a 35-day backfill take seconds.
    params = [row.__dict__ for row in rows]
    if params:
        connection.execute(meter_ledger.insert(), params)


def unsent_rows(
    engine: Engine,
    meters: Sequence[str],
    first_day: date,
    end_day: date,
    identifiers: Sequence[str] = (),
) -> list[LedgerRow]:
    """Rows still owed to Stripe: in the window, or planned by this run for another day."""
    with engine.connect() as connection:
        result = connection.execute(
            text(
                """
                SELECT identifier, meter, organization_id, day, revision, event_name,
                       stripe_customer_id, value, target_value, event_timestamp, status,
                       status_reason
                FROM billing.meter_ledger
                WHERE status IN ('pending', 'failed') AND meter = ANY(:meters)
                  AND ((day >= :first_day AND day < :end_day)
                       OR identifier = ANY(:identifiers))
                ORDER BY day, revision, organization_id
                """
            ),
            {
                "meters": list(meters),
                "first_day": first_day,
                "end_day": end_day,
                "identifiers": list(identifiers),
            },
        )
        return [LedgerRow(**row._mapping) for row in result]
