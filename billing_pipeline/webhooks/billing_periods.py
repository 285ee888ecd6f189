"""Billing periods as the webhook flow learns them, kept for as long as the days they cut matter.

A subscription event carries its current period and an `invoice.created` the period it closes;
both are recorded here (idempotently: one row per subscription and period start) so that the
reporting flow can cut the day holding a period's end and report its closing part at once
(`stripe_reporting/period_close.py`), even for periods the subscription has long moved past.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, text


def record_period(
    connection: Connection,
    subscription_id: str,
    customer_id: str | None,
    start: datetime | None,
    end: datetime | None,
) -> None:
    """Remember [start, end) as a period of the subscription; a later end wins (Stripe keeps a
    period's start and may only move its end, e.g. on a billing cycle anchor reset)."""
    if start is None or end is None or end <= start:
        return
    connection.execute(
        text(
            """
            INSERT INTO billing.billing_periods
                (stripe_subscription_id, period_start, period_end, stripe_customer_id)
            VALUES (:subscription, :start, :end, :customer)
            ON CONFLICT (stripe_subscription_id, period_start) DO UPDATE
            SET period_end = EXCLUDED.period_end,
                stripe_customer_id = coalesce(EXCLUDED.stripe_customer_id,
                                              billing_periods.stripe_customer_id)
            """
        ),
        {"subscription": subscription_id, "start": start, "end": end, "customer": customer_id},
    )
