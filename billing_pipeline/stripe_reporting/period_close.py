"""Billing periods that just ended: their closing part must reach Stripe before the invoice does.

Stripe finalizes a period's invoice one hour after the period ends by default (up to 72 h when
configured) and usage reported later is on no invoice. The daily run reports a day at 02:00 the
next morning, too late for a period ending at midnight and for the part of a day before a period
ends mid-day. So every period end the webhook flow knows of (`billing.billing_periods`, from
subscription events and `invoice.created`) and every subscription end asks for a run of that
day's partition as soon as it has passed; the run cuts the day at the boundary and reports the
closing part at once. Dagster's run key makes it one run per boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, text

# On a period-close run: the boundary it reports up to (the reporting asset plans only the parts
# that end by then).
PERIOD_CLOSE_TAG = "billing/period_closed_at"
# Stripe's longest finalization grace period: a boundary older than this has no draft invoice
# left to reach, and reporting it is the daily run's job.
MAX_GRACE_PERIOD = timedelta(hours=72)

_BOUNDARIES_SQL = """
SELECT stripe_subscription_id, period_end AS at FROM billing.billing_periods
WHERE period_end > :since AND period_end <= :now
UNION
SELECT stripe_subscription_id, ended_at FROM subscriptions
WHERE stripe_subscription_id IS NOT NULL AND ended_at > :since AND ended_at <= :now
ORDER BY at, stripe_subscription_id
"""


@dataclass(frozen=True)
class ClosedPeriod:
    """A subscription's period end (or end) that has passed."""

    subscription_id: str
    ended_at: datetime

    @property
    def partition_key(self) -> str:
        # The day holding the period's last instant: midnight ends close the day before.
        return (self.ended_at - timedelta(microseconds=1)).date().isoformat()

    @property
    def run_key(self) -> str:
        return f"period-close-{self.subscription_id}-{self.ended_at.isoformat()}"


def closed_periods(engine: Engine, now: datetime) -> list[ClosedPeriod]:
    """Boundaries passed within the longest grace period, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(_BOUNDARIES_SQL), {"since": now - MAX_GRACE_PERIOD, "now": now}
        ).all()
    return [ClosedPeriod(row.stripe_subscription_id, row.at) for row in rows]
