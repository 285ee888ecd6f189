"""Billing status in one place: per UTC day and meter, what was computed, billed, and owed.

One line per (day, meter): the usage computed (`billing.daily_usage`), the part of it no
customer pays for (`attribution.py`: free tier, no billable subscription that day), what the
ledger says Stripe holds (`reconciliation.ledger_views`, the same view the reconciliation check
shows beside a drift), the ledger rows per status that need a look, and, when Stripe is asked,
what Stripe's daily summaries hold. The CLI prints it as a table, `billing/status` shows it in
the UI; both read the same `billing_status` figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import stripe as stripe_sdk
from sqlalchemy import Engine, text

from billing_pipeline.day_ranges import day_range
from billing_pipeline.db.statuses import LedgerStatus
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.attribution import (
    CUSTOMER_VALUE_SQL,
    attribution_params,
    customer_parts_cte,
)
from billing_pipeline.stripe_reporting.check_verdict import CheckReading
from billing_pipeline.stripe_reporting.identifiers import day_start
from billing_pipeline.stripe_reporting.ledger import planned_windows
from billing_pipeline.stripe_reporting.reconciliation import TOLERANCE, ledger_views
from billing_pipeline.usage.meters import Meter

# Ledger statuses an operator watches, in the table's order.
WATCHED = (
    LedgerStatus.FAILED,
    LedgerStatus.REJECTED,
    LedgerStatus.IN_DOUBT,
    LedgerStatus.PENDING,
    LedgerStatus.EXPIRED,
)
HEADER = ("day", "meter", "usage", "billed", "unbilled", *WATCHED, "stripe")
NOT_RECONCILED = "not reconciled"


@dataclass
class StatusLine:
    day: date
    meter: str
    usage: int = 0
    billed: int = 0
    unbilled: int = 0
    # What the customers should hold: usage less unbilled for `sum` meters; for a gauge cut into
    # parts, each customer's latest part (an organization that changed customer that day is
    # held by both, each until its part ends).
    billable: int = 0
    # Part of `unbilled`: held back because several subscriptions of one customer price the meter.
    held: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    stripe: float | None = None  # None: Stripe was not asked

    def cells(self) -> tuple[object, ...]:
        stripe = NOT_RECONCILED if self.stripe is None else f"{self.stripe:g}"
        counts = (self.rows[status] for status in WATCHED)
        return (self.day, self.meter, self.usage, self.billed, self.unbilled, *counts, stripe)

    def problems(self) -> list[str]:
        """What needs attention on this line; empty when the day is fully and exactly billed."""
        found = [f"{self.rows[s]} {s}" for s in WATCHED if self.rows[s]]
        if uncorrectable := self.rows[LedgerStatus.UNCORRECTABLE]:
            found.append(
                f"{uncorrectable} uncorrectable: usage went down after Stripe's 24 h cancel "
                "window, the customer is over-billed (credit them; see ledger_failed_rows)"
            )
        if self.held:
            found.append(
                f"{self.held} held: several subscriptions of one customer price this meter "
                "(check subscriptions_sharing_a_meter)"
            )
        if self.billed != self.billable:
            found.append(f"billed {self.billed} ≠ billable {self.billable}")
        if self.stripe is not None and abs(self.stripe - self.billed) > TOLERANCE:
            found.append(f"Stripe holds {self.stripe:g} ≠ billed {self.billed}")
        return found


# Only the parts ended by `:now`, the only ones planning bills: today's partial day (after a
# period-close run) is not shown as owed while it is still going on.
# Per organization and day first, as the meter aggregates a day's parts (`sum` adds them, a
# `last` gauge is its latest part: the sensors active at the day's end, never the parts added
# up); `billable` is what the customers should hold, with the aggregation Stripe and the ledger
# view use per customer and day.
_USAGE_SQL = f"""
WITH {{parts}},
organization_days AS (
    SELECT day, organization_id,
           CASE WHEN :last THEN (array_agg(value ORDER BY part_start DESC))[1]
                ELSE sum(value) END AS usage,
           CASE WHEN :last
                THEN (array_agg(CASE WHEN customer IS NULL THEN value ELSE 0 END
                                ORDER BY part_start DESC))[1]
                ELSE coalesce(sum(value) FILTER (WHERE customer IS NULL), 0) END AS unbilled,
           CASE WHEN :last
                THEN (array_agg(CASE WHEN held_customer IS NOT NULL THEN value ELSE 0 END
                                ORDER BY part_start DESC))[1]
                ELSE coalesce(sum(value) FILTER (WHERE held_customer IS NOT NULL), 0) END
               AS held
    FROM organization_parts WHERE part_end <= :now GROUP BY day, organization_id
),
customer_days AS (
    SELECT day, {CUSTOMER_VALUE_SQL} AS target FROM customer_parts
    WHERE NOT held AND part_end <= :now
    GROUP BY customer, day
)
SELECT o.day, sum(o.usage)::bigint AS usage, sum(o.unbilled)::bigint AS unbilled,
       sum(o.held)::bigint AS held,
       coalesce((SELECT sum(c.target) FROM customer_days c WHERE c.day = o.day), 0)::bigint
           AS billable
FROM organization_days o
GROUP BY o.day
"""

_COUNTS_SQL = """
SELECT meter, day, status, count(*) AS n FROM billing.meter_ledger
WHERE day >= :first_day AND day < :end_day GROUP BY meter, day, status
"""


def billing_status(
    engine: Engine,
    meters: Sequence[Meter],
    first_day: date,
    end_day: date,
    stripe: StripeBilling | None = None,
    now: datetime | None = None,
) -> list[StatusLine]:
    """The status lines of [first_day, end_day); `stripe` given: with Stripe's daily totals.
    Usage counts the parts of days ended by `now` (default: the wall clock)."""
    now = now or datetime.now(UTC)
    lines: dict[tuple[date, str], StatusLine] = {}

    def line(day: date, meter: str) -> StatusLine:
        return lines.setdefault((day, meter), StatusLine(day, meter))

    window = {"first_day": first_day, "end_day": end_day}
    with engine.connect() as connection:
        windows = planned_windows(connection)
        for meter in meters:
            params = {
                **attribution_params(meter, windows.get(meter.name), first_day, end_day),
                "last": meter.aggregation == "last",
                "now": now,
            }
            sql = _USAGE_SQL.format(parts=customer_parts_cte(meter))
            for row in connection.execute(text(sql), params):
                entry = line(row.day, meter.name)
                entry.usage, entry.unbilled = int(row.usage), int(row.unbilled)
                entry.billable, entry.held = int(row.billable), int(row.held)
        for row in connection.execute(text(_COUNTS_SQL), window):
            line(row.day, row.meter).rows[row.status] = int(row.n)
    # `settled_before` only decides the views' `settling` flag, which the status does not show.
    views = ledger_views(engine, meters, windows, first_day, end_day, now)
    for (meter_name, _, day), view in views.items():
        line(day, meter_name).billed += view.held
    known = [m for m in meters if any(key[1] == m.name for key in lines)]
    if stripe is not None:
        for entry in lines.values():
            entry.stripe = 0.0
        _add_stripe(lines, stripe, known, {key[:2] for key in views}, first_day, end_day)
    return [lines[key] for key in sorted(lines)]


def _add_stripe(
    lines: dict[tuple[date, str], StatusLine],
    stripe: StripeBilling,
    meters: Sequence[Meter],
    pairs: set[tuple[str, str]],
    first_day: date,
    end_day: date,
) -> None:
    """Stripe's daily summaries of every customer the ledger billed in the window."""
    remote = {m.event_name: m for m in stripe.list_meters() if m.status == "active"}
    for meter in meters:
        if meter.event_name not in remote:
            continue
        for customer in sorted(c for m, c in pairs if m == meter.name):
            try:
                totals = stripe.daily_totals(
                    remote[meter.event_name].id, customer, day_start(first_day), day_start(end_day)
                )
            except stripe_sdk.InvalidRequestError as error:
                if error.code != "resource_missing":
                    raise
                continue  # a customer Stripe does not know holds nothing (its events failed)
            for day, value in totals.items():
                if value:
                    entry = lines.setdefault(
                        (day, meter.name), StatusLine(day, meter.name, stripe=0)
                    )
                    entry.stripe = (entry.stripe or 0.0) + value


def totals(lines: Sequence[StatusLine]) -> list[StatusLine]:
    """One total line per meter (the day column left empty by the renderers)."""
    by_meter: dict[str, StatusLine] = {}
    for entry in lines:
        total = by_meter.setdefault(entry.meter, StatusLine(entry.day, entry.meter))
        total.usage += entry.usage
        total.billed += entry.billed
        total.unbilled += entry.unbilled
        total.billable += entry.billable
        total.held += entry.held
        total.rows.update(entry.rows)
        if entry.stripe is not None:
            total.stripe = (total.stripe or 0.0) + entry.stripe
    return [by_meter[name] for name in sorted(by_meter)]


def verdict(lines: Sequence[StatusLine], checks: CheckReading) -> str:
    """ "healthy", or each failed check and each day and meter that needs attention, and why.

    The union of every signal: a check that failed (an invoice finalized short, a dead letter,
    a drift) needs attention even when every ledger row is fine, and checks that could not be
    read are said, never taken as passed.
    """
    issues = [f"- {check.problem()}" for check in checks.failed]
    issues += [f"- {e.day} {e.meter}: {', '.join(p)}" for e in lines if (p := e.problems())]
    if issues:
        if checks.unread:
            issues.append(f"- Dagster's checks not read: {checks.unread}")
        return "\n".join(["needs attention:", *issues])
    if checks.unread:
        return f"healthy as far as the ledger shows; Dagster's checks not read: {checks.unread}"
    return "healthy"


def render_text(
    lines: Sequence[StatusLine], first_day: date, end_day: date, checks: CheckReading
) -> str:
    """The terminal table: one line per day and meter, the totals, and the verdict."""
    rows = [tuple(map(str, e.cells())) for e in lines]
    rows += [("total", *map(str, t.cells()[1:])) for t in totals(lines)]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(HEADER)]
    numeric = range(2, len(HEADER))

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [
        f"billing status {day_range(first_day, end_day)}",
        fmt(HEADER),
        fmt(["-" * w for w in widths]),
    ]
    out += [fmt(r) for r in rows[: len(lines)]]
    out += [fmt(["-" * w for w in widths])] + [fmt(r) for r in rows[len(lines) :]]
    out.append(verdict(lines, checks))
    return "\n".join(out)
