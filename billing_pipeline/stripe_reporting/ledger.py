"""The meter-event ledger: the pipeline's record of what Stripe has been told, and the outbox.

One row is one revision of a (meter, Stripe customer, UTC day, part of the day); a day is one
part unless a billing boundary cuts it (`attribution.py`). Stripe remembers identifiers for
about 24 hours; this table remembers them forever. A row is written (pending, with its
deterministic identifier) before the Stripe call and marked afterwards, so a crash in between
resends the same identifier within the day, and is settled against Stripe's totals after it
(see `in_doubt.py`) when resending could bill twice.

What a row's value means depends on the Stripe meter it was planned for (`aggregation_window`):
raw `sum` meters add up differences; raw `last` meters and pre-aggregated meters
(`event_time_window=day`) carry the whole day's value in every revision.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from billing_pipeline.db.schema import meter_ledger
from billing_pipeline.db.statuses import UNSENT_STATUSES, LedgerStatus
from billing_pipeline.db.transactions import in_transaction
from billing_pipeline.stripe_reporting.identifiers import (
    event_identifier,
    event_timestamp,
)
from billing_pipeline.usage.meters import Meter

# Stripe accepts timestamps up to 35 days old; an hour's margin keeps a row planned just inside
# the window from expiring on the wire.
STRIPE_WINDOW = timedelta(days=35) - timedelta(hours=1)

OUTSIDE_WINDOW = "day is outside Stripe's 35-day window; not sent (never clamped to another day)"
REASSERT = "resent so that the latest-arriving event of each day is that day's value"
SUPERSEDED = "a newer revision carries this day's whole value"


@dataclass(frozen=True)
class LedgerRow:
    identifier: str
    meter: str
    stripe_customer_id: str
    day: date
    part_start: datetime
    part_end: datetime
    revision: int
    event_name: str
    organization_ids: list[int]
    aggregation_window: str | None
    value: int
    target_value: int
    event_timestamp: datetime
    status: str
    status_reason: str | None = None


def new_row(
    meter: Meter,
    window: str | None,
    customer: str,
    part: tuple[datetime, datetime],
    revision: int,
    value: int,
    target: int,
    organization_ids: list[int],
    now: datetime,
    after: datetime | None,
    reason: str | None = None,
) -> LedgerRow:
    """A pending revision of the part [start, end), or an expired one when the part is outside
    Stripe's window.

    Stamped anywhere inside the part: for meters that keep whole parts (raw meters, `day`
    windows). An hourly meter's row belongs to the part's hour window, which planning assigns in
    SQL (`attribution.py`).
    """
    if window == "hour":
        raise ValueError("hourly meters' revisions are planned in SQL, in their hour window")
    part_start, part_end = part
    stamp = event_timestamp(part_start, part_end, now, after)
    expired = stamp < now - STRIPE_WINDOW
    return LedgerRow(
        identifier=event_identifier(
            meter.name, meter.event_name, customer, part_start, revision, value
        ),
        meter=meter.name,
        stripe_customer_id=customer,
        day=part_start.astimezone(UTC).date(),
        part_start=part_start,
        part_end=part_end,
        revision=revision,
        event_name=meter.event_name,
        organization_ids=list(organization_ids),
        aggregation_window=window,
        value=value,
        target_value=target,
        event_timestamp=stamp,
        status=LedgerStatus.EXPIRED if expired else LedgerStatus.PENDING,
        status_reason=OUTSIDE_WINDOW if expired else reason,
    )


COLUMNS = ", ".join(LedgerRow.__dataclass_fields__)


def insert_rows(connection: Connection, rows: Iterable[LedgerRow]) -> None:
    # A Core insert lets SQLAlchemy batch many rows per statement ("insertmanyvalues"); a text()
    # executemany is one round trip per row, which made planning a 35-day backfill take seconds.
    params = [asdict(row) for row in rows]
    if params:
        connection.execute(meter_ledger.insert(), params)


# Rows a sender holds in memory at once: whole customers, about this many rows.
CHUNK_ROWS = 10_000

_UNSENT_SQL = f"""
SELECT {COLUMNS}
FROM billing.meter_ledger
WHERE status = ANY(:unsent) AND meter = ANY(:meters)
  AND day >= :first_day AND day < :end_day AND stripe_customer_id {{customers}}
  -- A customer's meter waits while one of its events awaits its cancel (`cancels.py`).
  AND NOT EXISTS (
      SELECT 1 FROM billing.meter_ledger c
      WHERE c.status = :cancelling AND c.stripe_customer_id = meter_ledger.stripe_customer_id
        AND c.meter = meter_ledger.meter)
ORDER BY stripe_customer_id, part_start, revision
{{limit}}
"""


def unsent_rows(
    engine: Engine | Connection, meters: Sequence[str], first_day: date, end_day: date
) -> list[LedgerRow]:
    """Rows still owed to Stripe in the window, in the order they must arrive.

    Per customer, parts ascending and revisions ascending: a newer revision, and a later part,
    arrive after an older one, which is what `last` by arrival and pre-aggregated meters need.
    """
    return [row for chunk in unsent_chunks(engine, meters, first_day, end_day) for row in chunk]


def unsent_chunks(
    engine: Engine | Connection,
    meters: Sequence[str],
    first_day: date,
    end_day: date,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[list[LedgerRow]]:
    """`unsent_rows` a chunk of whole customers at a time, so a sender's memory stays flat in the
    number of customers. A customer's rows are never split between chunks: its order holds."""
    params = {
        "unsent": list(UNSENT_STATUSES),
        "cancelling": LedgerStatus.CANCELLING,
        "meters": list(meters),
        "first_day": first_day,
        "end_day": end_day,
    }
    after = ""
    while True:
        with in_transaction(engine) as connection:
            sql = _UNSENT_SQL.format(customers="> :after", limit="LIMIT :limit")
            rows = _ledger_rows(
                connection, sql, {**params, "after": after, "limit": chunk_rows + 1}
            )
            if len(rows) > chunk_rows:
                # The last customer may go on past the limit: leave it to the next chunk, or
                # read it whole when it alone fills the chunk.
                last = rows[-1].stripe_customer_id
                rows = [row for row in rows if row.stripe_customer_id != last]
                if not rows:
                    sql = _UNSENT_SQL.format(customers="= :after", limit="")
                    rows = _ledger_rows(connection, sql, {**params, "after": last})
        if not rows:
            return
        yield rows
        after = rows[-1].stripe_customer_id


def _ledger_rows(connection: Connection, sql: str, params: dict[str, Any]) -> list[LedgerRow]:
    # Positionally (the query selects COLUMNS, the fields in order): building each row from a
    # mapping took most of the time of reading a chunk.
    return [LedgerRow(*row) for row in connection.execute(text(sql), params).all()]


def status_counts_by_day(
    engine: Engine, first_day: date, end_day: date
) -> dict[tuple[date, str], int]:
    """How many ledger rows of each day in [first_day, end_day) are in each status."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT day, status, count(*) AS n FROM billing.meter_ledger "
                "WHERE day >= :first_day AND day < :end_day GROUP BY day, status"
            ),
            {"first_day": first_day, "end_day": end_day},
        )
        return {(row.day, row.status): int(row.n) for row in rows}


def planned_windows(connection: Connection) -> dict[str, str | None]:
    """The Stripe meter kind each meter's rows were last planned for (newest row wins).

    Lets views that do not ask Stripe (status, checks) cut days exactly as planning did.
    """
    rows = connection.execute(
        text(
            "SELECT DISTINCT ON (meter) meter, aggregation_window FROM billing.meter_ledger "
            "ORDER BY meter, created_at DESC"
        )
    )
    return {row.meter: row.aggregation_window for row in rows}
