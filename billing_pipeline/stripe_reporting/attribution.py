"""Which Stripe customer pays for an organization's usage on a UTC day: one SQL definition.

Planning and reconciliation read the same CTE, so what the pipeline sends and what it checks
Stripe against can never disagree about the customer.

A subscription bills a day when it has a Stripe customer, has started before the day ends, has
not ended by the day's start (one ending exactly at midnight does not bill the next day) and its
status is billable:

- billable: `active`, `trialing`, `past_due`, `unpaid` (Stripe keeps invoicing these), and
  `canceled` for the days before `ended_at` (a canceled row without `ended_at` bills nothing);
- not billable: `incomplete`, `incomplete_expired` (the first payment never succeeded) and
  `paused` (Stripe creates no invoices while paused).

The status is the subscription's current one, applied to every day planned: a subscription that
becomes `paused` or `incomplete_expired` stops billing the days still inside Stripe's window
(their events are reversed), which is what an operator should expect from a subscription that
never paid. Several organizations on one customer are summed, for `last` gauges too.
"""

from __future__ import annotations

BILLABLE_STATUSES = ("active", "trialing", "past_due", "unpaid", "canceled")

# Rows: (day, organization_id, value, customer, reason). `customer` is NULL when no subscription
# bills that day; `reason` says why. Parameters: :meter, :first_day, :end_day, :billable.
ORGANIZATION_DAYS_SQL = """
SELECT u.day, u.organization_id, u.value, c.stripe_customer_id AS customer,
       CASE
           WHEN c.stripe_customer_id IS NOT NULL THEN NULL
           WHEN NOT EXISTS (
               SELECT 1 FROM subscriptions s WHERE s.organization_id = u.organization_id)
               THEN 'no subscription (free tier)'
           ELSE 'no billable subscription on this day (not started, ended, no Stripe customer, '
                || 'or status not billable)'
       END AS reason
FROM billing.daily_usage u
LEFT JOIN LATERAL (
    SELECT s.stripe_customer_id
    FROM subscriptions s
    WHERE s.organization_id = u.organization_id
      AND s.stripe_customer_id IS NOT NULL
      AND s.started_at IS NOT NULL
      AND s.started_at < CAST(u.day AS timestamptz) + interval '1 day'
      AND (s.ended_at IS NULL OR s.ended_at > CAST(u.day AS timestamptz))
      AND s.status = ANY(CAST(:billable AS text[]))
      AND (s.status <> 'canceled' OR s.ended_at IS NOT NULL)
    ORDER BY s.started_at DESC, s.id DESC
    LIMIT 1
) c ON true
WHERE u.meter = :meter AND u.day >= :first_day AND u.day < :end_day
"""

# One row per (customer, day): the source's total for that customer, with its organizations.
CUSTOMER_DAYS_CTE = f"""
organization_days AS ({ORGANIZATION_DAYS_SQL}),
customer_days AS (
    SELECT customer, day, sum(value)::bigint AS target,
           array_agg(organization_id ORDER BY organization_id) AS organization_ids
    FROM organization_days
    WHERE customer IS NOT NULL
    GROUP BY customer, day
)
"""
