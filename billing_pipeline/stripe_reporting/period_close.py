"""Billing boundaries that just passed: their closing part must reach Stripe before the invoice.

Stripe finalizes a period's invoice one hour after the period ends by default (up to 72 h when
configured) and usage reported later is on no invoice. The daily run reports a day at 02:00 the
next morning: too late for a period ending at midnight, and for the part of a day before a
period ends mid-day. So every period end the webhook flow knows of (`billing.billing_periods`,
from subscription events and `invoice.created`) and every subscription end asks, as soon as it
has passed, for one run per boundary instant (calendar billing ends every subscription at the
same instant: one run closes them all).

The run covers the boundary's last day (today, still in progress, for a mid-day end: today is a
partition, see partitions.py) and, when it was never computed complete, the day before: a period
ending between 00:00 and the 02:00 daily run would otherwise find its previous day unplanned.
Planning reports only the parts that have ended by the run's start, so the closing part goes out
at once and the rest of the day is left to the daily run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, text

# On a period-close run: the boundary instant it was launched for, for the operator to read.
PERIOD_CLOSE_TAG = "billing/period_closed_at"
# Stripe's longest finalization grace period: a boundary older than this has no draft invoice
# left to reach, and reporting it is the daily run's job.
MAX_GRACE_PERIOD = timedelta(hours=72)

_BOUNDARIES_SQL = """
SELECT at, array_agg(DISTINCT stripe_subscription_id ORDER BY stripe_subscription_id)
           AS subscriptions
FROM (
    SELECT stripe_subscription_id, period_end AS at FROM billing.billing_periods
    WHERE period_end > :since AND period_end <= :now
    UNION
    SELECT stripe_subscription_id, ended_at FROM subscriptions
    WHERE stripe_subscription_id IS NOT NULL AND ended_at > :since AND ended_at <= :now
) AS boundaries
GROUP BY at
ORDER BY at
"""


@dataclass(frozen=True)
class ClosingBoundary:
    """An instant at which billing periods (or subscriptions) ended, and which ones."""

    at: datetime
    subscription_ids: tuple[str, ...]

    @property
    def last_day(self) -> date:
        """The day holding the periods' last instant: a midnight end closes the day before."""
        return (self.at - timedelta(microseconds=1)).date()

    @property
    def run_key(self) -> str:
        return f"period-close-{self.at.isoformat()}"


def closing_boundaries(engine: Engine, now: datetime) -> list[ClosingBoundary]:
    """Boundary instants passed within the longest grace period, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(_BOUNDARIES_SQL), {"since": now - MAX_GRACE_PERIOD, "now": now}
        ).all()
    return [ClosingBoundary(row.at, tuple(row.subscriptions)) for row in rows]
