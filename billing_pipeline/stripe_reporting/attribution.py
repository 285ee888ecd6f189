"""Which Stripe customer pays for an organization's usage, per part of a UTC day: one SQL.

Planning, reconciliation, status and the checks read the same SQL, so what the pipeline sends and
what it checks Stripe against can never disagree about the customer or the period.

Parts: Stripe invoices a customer's meter over each billing period, by event timestamp, so a day
that contains a billing boundary of the customer's subscriptions (a period's start or end, a
subscription's start or end) is cut there; each part is measured on its own (the meter's
`part_sql`) and stamped inside itself. A day without a boundary is one part, valued from
`billing.daily_usage`. Only Stripe meters that can hold several events of one day apart split
days (`splits_days`): raw `sum` meters and hourly pre-aggregated meters.

Boundaries per (organization, customer, day): an organization is cut only at the boundaries of
the customer holding it at that time, the instants all that customer's organizations are cut at
(its customer's `customer_parts` must be one part per instant, or a gauge would count only the
organizations of the latest part). Which customer holds a piece of a day is decided per piece,
so the day is first cut at the boundaries of every customer the organization ever had; the
pieces a customer holds are then put back together inside that customer's own parts (summed,
or for a gauge the latest piece: the sensors at the part's end).

Hour windows: an hourly meter keeps one event per customer and window, so each part of a cut
day needs a window of its own that it overlaps; its events are stamped where the two meet, which
is inside the part and so inside its period. From the day's last part backwards each part takes
the latest window it touches that the later parts left free (a part ending at 24:00 takes the
23:00 window even when it starts at 23:20; the part before it then takes 22:00). A part left
without a free window (three or more boundaries within about an hour) is not billed, with that
reason.

A subscription bills a part when it has a Stripe customer, has started before the part ends, has
not ended by the part's start and its status is billable:

- billable: `active`, `trialing`, `past_due`, `unpaid` (Stripe keeps invoicing these), and
  `canceled` for the time before `ended_at` (a canceled row without `ended_at` bills nothing);
- not billable: `incomplete`, `incomplete_expired` (the first payment never succeeded) and
  `paused` (Stripe creates no invoices while paused).

The status is the one the subscription had at the part's end, near which its event is stamped
(`billing.subscription_status_history`, kept by the webhook flow, `webhooks/status_history.py`),
so a trial paused and then resumed bills its trial days and the days since the resume and never
its paused days, whenever the run. Before the first point of its history a subscription has the
first status seen; a subscription whose history holds a single status, or none (a row from
before the history was kept, or one the application wrote itself), has its current status on
every day, which spares most subscriptions the history lookup. A subscription that
becomes `incomplete_expired` was `incomplete` before: it bills no day. Several organizations on
one customer are summed, for `last` gauges too.

Several subscriptions on one meter: Stripe's meter aggregates per customer, so every subscription
of the customer with a price on the meter bills the customer's whole usage. A part for which two
or more subscriptions of the customer would bill (as above: started, not ended, billable status
at the part) with a price on the meter's Stripe meter (`billing.subscription_prices`,
`billing.stripe_meters`) is held: `customer` is NULL with that reason, `held_customer` names the
customer, `shared_subscriptions` the subscriptions, and `customer_parts` keeps the part marked
`held` so that planning sends nothing for it, neither a value nor a reversal: what Stripe already
holds for it stays, and is billed once per subscription until the operator resolves it (README,
"Several subscriptions on one meter").
"""

from __future__ import annotations

from datetime import date
from typing import Any

from billing_pipeline.usage.meters import Meter

BILLABLE_STATUSES = ("active", "trialing", "past_due", "unpaid", "canceled")

AFTER_END = "after the subscription ended: Stripe bills no usage past a subscription's end"
SHARED_METER = (
    "held: several subscriptions of the customer price this meter, and Stripe would bill the "
    "customer's whole usage on each of them: "
)
SHORT_PART = (
    "no hour window of its own: the later parts of its day took every hour window it touches "
    "(three or more billing boundaries within about an hour)"
)


# A customer's value over several parts (of a day, or of a billing period), as Stripe
# aggregates its events: `sum` adds the parts, `last` keeps the latest part's value. Over
# `customer_parts` rows; `:last` says which.
CUSTOMER_VALUE_SQL = (
    "CAST(CASE WHEN :last THEN (array_agg(target ORDER BY part_start DESC))[1] "
    "ELSE sum(target) END AS bigint)"
)


def splits_days(meter: Meter, window: str | None) -> bool:
    """Whether the Stripe meter can bill the parts of a day apart.

    A `day` window keeps one event a day, and a raw `last` meter's daily order is kept by
    `ordering.py` per whole day: those bill whole days (README, "Billing periods").
    """
    return window == "hour" or (window is None and meter.aggregation == "sum")


def attribution_params(
    meter: Meter, window: str | None, first_day: date, end_day: date
) -> dict[str, Any]:
    """The parameters of `organization_parts_sql` / `customer_parts_cte` for one meter."""
    return {
        "meter": meter.name,
        "first_day": first_day,
        "end_day": end_day,
        "billable": list(BILLABLE_STATUSES),
        "split": splits_days(meter, window),
        "hour_windows": window == "hour",
        "short_part": SHORT_PART,
        "after_end": AFTER_END,
        "shared_meter": SHARED_METER,
    }


def organization_parts_sql(meter: Meter) -> str:
    """Rows `(day, part_start, part_end, organization_id, value, customer, held_customer,
    shared_subscriptions, reason, stamp_start, stamp_end)`.

    `customer` is NULL when no subscription bills the part; `reason` says why. A part held
    because several subscriptions of its customer price the meter names that customer in
    `held_customer` and the subscriptions in `shared_subscriptions`. `stamp_start` and
    `stamp_end` bound the timestamps the part's events may carry: the part itself, or on an
    hourly meter the part's own hour window within it.
    """
    # A gauge's merged pieces are worth the latest piece's value (sensors at the part's end).
    latest_piece = "(array_agg(h.value ORDER BY h.piece_start DESC))[1]"
    merged_value = latest_piece if meter.aggregation == "last" else "sum(h.value)"
    return f"""
WITH RECURSIVE usage_days AS (
    SELECT u.day, u.organization_id, u.value
    FROM billing.daily_usage u
    WHERE u.meter = :meter AND u.day >= :first_day AND u.day < :end_day
),
customer_subscriptions AS (
    SELECT DISTINCT s.organization_id, t.id, t.stripe_subscription_id, t.started_at, t.ended_at
    FROM subscriptions s
    JOIN subscriptions t ON t.id = s.id OR t.stripe_customer_id = s.stripe_customer_id
    WHERE CAST(:split AS boolean)
),
boundaries AS (
    SELECT DISTINCT c.organization_id, b.at, CAST(b.at AT TIME ZONE 'UTC' AS date) AS day
    FROM customer_subscriptions c
    {_boundary_instants("c")}
),
-- A join, not a lookup per organization-day: a subquery over the `boundaries` CTE scans all of
-- it for every cut day, which grew with the square of the organizations.
parts AS (
    SELECT p.organization_id, p.day, p.part_start,
           lead(p.part_start, 1, CAST(p.day AS timestamptz) + interval '1 day')
               OVER (PARTITION BY p.organization_id, p.day ORDER BY p.part_start) AS part_end
    FROM (
        SELECT b.organization_id, b.day, b.at AS part_start FROM boundaries b
        UNION
        SELECT b.organization_id, b.day, CAST(b.day AS timestamptz) FROM boundaries b
    ) AS p
    JOIN usage_days u ON u.organization_id = p.organization_id AND u.day = p.day
),
part_values AS ({meter.part_sql}),
organization_parts AS (
    SELECT u.day, CAST(u.day AS timestamptz) AS part_start,
           CAST(u.day AS timestamptz) + interval '1 day' AS part_end, u.organization_id, u.value
    FROM usage_days u
    WHERE NOT EXISTS (
        SELECT 1 FROM boundaries b WHERE b.organization_id = u.organization_id AND b.day = u.day)
    UNION ALL
    SELECT p.day, p.part_start, p.part_end, p.organization_id, coalesce(v.value, 0)
    FROM parts p
    LEFT JOIN part_values v
        ON v.organization_id = p.organization_id AND v.part_start = p.part_start
),
attributed AS (
SELECT o.day, o.part_start, o.part_end, o.organization_id, o.value,
       CASE WHEN shared.subscriptions IS NULL THEN c.stripe_customer_id END AS customer,
       shared.customer AS held_customer, shared.subscriptions AS shared_subscriptions,
       CASE
           WHEN shared.subscriptions IS NOT NULL
               THEN CAST(:shared_meter AS text) || array_to_string(shared.subscriptions, ', ')
           WHEN c.stripe_customer_id IS NOT NULL THEN NULL
           WHEN NOT EXISTS (
               SELECT 1 FROM subscriptions s WHERE s.organization_id = o.organization_id)
               THEN 'no subscription (free tier)'
           WHEN EXISTS (
               SELECT 1 FROM subscriptions s
               WHERE s.organization_id = o.organization_id AND s.ended_at <= o.part_start
                 AND NOT EXISTS (
                     SELECT 1 FROM subscriptions l
                     WHERE l.organization_id = o.organization_id
                       AND (l.ended_at IS NULL OR l.ended_at > o.part_start)))
               THEN CAST(:after_end AS text)
           ELSE 'no billable subscription at this time (not started, ended, no Stripe customer, '
                || 'or status not billable)'
       END AS reason
FROM organization_parts o
LEFT JOIN LATERAL (
    SELECT s.stripe_customer_id
    FROM subscriptions s
    CROSS JOIN LATERAL ({_status_at_part("s")}) AS part_status
    WHERE s.organization_id = o.organization_id
      AND s.stripe_customer_id IS NOT NULL
      AND {_bills_part("s")}
    ORDER BY s.started_at DESC, s.id DESC
    LIMIT 1
) c ON true
LEFT JOIN LATERAL (
    SELECT c.stripe_customer_id AS customer, subscriptions
    FROM (
        SELECT CASE
            -- Computed once per statement (an InitPlan): only the customers with two
            -- subscriptions pricing the meter at all are looked at part by part.
            WHEN c.stripe_customer_id = ANY(ARRAY(
                SELECT u.stripe_customer_id FROM subscriptions u
                JOIN billing.subscription_prices p
                    ON p.stripe_subscription_id = u.stripe_subscription_id
                JOIN billing.stripe_meters m ON m.stripe_meter_id = p.stripe_meter_id
                WHERE m.meter = :meter AND u.stripe_customer_id IS NOT NULL
                GROUP BY u.stripe_customer_id HAVING count(DISTINCT u.id) > 1))
            THEN (
                SELECT array_agg(t.stripe_subscription_id ORDER BY t.stripe_subscription_id)
                FROM subscriptions t
                CROSS JOIN LATERAL ({_status_at_part("t")}) AS part_status
                WHERE t.stripe_customer_id = c.stripe_customer_id
                  AND {_bills_part("t")}
                  AND EXISTS (
                      SELECT 1 FROM billing.subscription_prices p
                      JOIN billing.stripe_meters m ON m.stripe_meter_id = p.stripe_meter_id
                      WHERE p.stripe_subscription_id = t.stripe_subscription_id
                        AND m.meter = :meter)
                HAVING count(*) > 1)
        END AS subscriptions
    ) AS candidates
    WHERE subscriptions IS NOT NULL
) shared ON true
),
-- The customer's own parts: its days cut at its boundaries only. An organization's parts above
-- are cut at the boundaries of every customer it ever had, so that each piece has one customer;
-- the pieces a customer holds are put back together inside that customer's parts.
customer_boundaries AS (
    SELECT DISTINCT t.stripe_customer_id AS customer, b.at,
           CAST(b.at AT TIME ZONE 'UTC' AS date) AS day
    FROM subscriptions t
    {_boundary_instants("t")}
      AND CAST(:split AS boolean) AND t.stripe_customer_id IS NOT NULL
),
pieces AS (
    SELECT a.* FROM attributed a
    WHERE a.customer IS NOT NULL
      AND a.part_end - a.part_start < interval '1 day'
),
customer_cuts AS (
    SELECT customer, day, part_start,
           lead(part_start, 1, CAST(day AS timestamptz) + interval '1 day')
               OVER (PARTITION BY customer, day ORDER BY part_start) AS part_end
    FROM (
        SELECT customer, day, at AS part_start FROM customer_boundaries
        UNION
        SELECT customer, day, CAST(day AS timestamptz) FROM pieces
    ) AS cuts
),
customer_pieces AS (
    SELECT p.day, g.part_start, g.part_end, p.organization_id, p.customer,
           p.part_start AS piece_start, p.value
    FROM pieces p
    JOIN customer_cuts g ON g.customer = p.customer AND g.day = p.day
        AND g.part_start <= p.part_start AND p.part_start < g.part_end
),
customer_organization_parts AS (
    SELECT a.day, a.part_start, a.part_end, a.organization_id, a.value, a.customer
    FROM attributed a
    WHERE a.customer IS NOT NULL AND a.part_end - a.part_start >= interval '1 day'
    UNION ALL
    SELECT h.day, h.part_start, h.part_end, h.organization_id, {merged_value}, h.customer
    FROM customer_pieces h
    GROUP BY h.day, h.part_start, h.part_end, h.organization_id, h.customer
),
-- Hourly meters keep one event per customer and hour window, so each part of a cut day needs
-- an hour window of its own that it overlaps: from the day's last part backwards, each takes
-- the latest window it touches that the parts after it left free.
cut_parts AS (
    SELECT customer, day, part_start,
           date_trunc('hour', part_start, 'UTC') AS first_window,
           date_trunc('hour', part_end - interval '1 microsecond', 'UTC') AS last_window,
           row_number() OVER (PARTITION BY customer, day ORDER BY part_start DESC) AS k
    FROM (SELECT DISTINCT customer, day, part_start, part_end FROM customer_pieces) AS p
    WHERE CAST(:hour_windows AS boolean)
),
hour_windows (customer, day, k, part_start, stamp_window, last_taken) AS (
    SELECT customer, day, k, part_start, last_window, last_window
    FROM cut_parts WHERE k = 1
    UNION ALL
    SELECT p.customer, p.day, p.k, p.part_start,
           CASE WHEN least(p.last_window, w.last_taken - interval '1 hour') >= p.first_window
                THEN least(p.last_window, w.last_taken - interval '1 hour') END,
           CASE WHEN least(p.last_window, w.last_taken - interval '1 hour') >= p.first_window
                THEN least(p.last_window, w.last_taken - interval '1 hour')
                ELSE w.last_taken END
    FROM hour_windows w
    JOIN cut_parts p ON p.customer = w.customer AND p.day = w.day AND p.k = w.k + 1
),
stamped AS (
    SELECT o.*,
           CASE WHEN NOT CAST(:hour_windows AS boolean) THEN o.part_start
                WHEN w.customer IS NULL THEN o.part_end - interval '1 hour'  -- a whole day
                WHEN w.stamp_window IS NOT NULL THEN greatest(w.stamp_window, o.part_start)
           END AS stamp_start,
           CASE WHEN NOT CAST(:hour_windows AS boolean) OR w.customer IS NULL THEN o.part_end
                WHEN w.stamp_window IS NOT NULL
                    THEN least(w.stamp_window + interval '1 hour', o.part_end)
           END AS stamp_end
    FROM customer_organization_parts o
    LEFT JOIN hour_windows w
        ON w.customer = o.customer AND w.day = o.day AND w.part_start = o.part_start
)
SELECT day, part_start, part_end, organization_id, value,
       CASE WHEN stamp_start IS NOT NULL THEN customer END AS customer,
       CAST(NULL AS text) AS held_customer, CAST(NULL AS text[]) AS shared_subscriptions,
       CASE WHEN stamp_start IS NULL THEN CAST(:short_part AS text) END AS reason,
       stamp_start, stamp_end
FROM stamped
UNION ALL
SELECT day, part_start, part_end, organization_id, value, customer, held_customer,
       shared_subscriptions, reason, CAST(NULL AS timestamptz), CAST(NULL AS timestamptz)
FROM attributed
WHERE customer IS NULL
"""


def _boundary_instants(s: str) -> str:
    """Rows `b.at`: the billing boundaries of subscription `s` inside the planned days (its start
    and end, every period start and end the webhook flow recorded for it), midnights left out
    because a day already begins there."""
    return f"""CROSS JOIN LATERAL (
        SELECT {s}.started_at UNION ALL SELECT {s}.ended_at
        UNION ALL SELECT p.period_start FROM billing.billing_periods p
            WHERE p.stripe_subscription_id = {s}.stripe_subscription_id
        UNION ALL SELECT p.period_end FROM billing.billing_periods p
            WHERE p.stripe_subscription_id = {s}.stripe_subscription_id
    ) AS b (at)
    WHERE b.at >= CAST(:first_day AS timestamptz) AND b.at < CAST(:end_day AS timestamptz)
      AND CAST(b.at AT TIME ZONE 'UTC' AS time) <> time '00:00'"""


def _status_at_part(s: str) -> str:
    """The status subscription `s` had at the end of part `o`: its history's latest point
    before then, else its first point. Only subscriptions whose history holds two statuses are
    looked up (a hashed set, built once per statement); the others, and those without history
    (rows from before it was kept, or written by the application), have their current one."""
    return f"""
        SELECT CASE WHEN {s}.stripe_subscription_id IN (
                        SELECT c.stripe_subscription_id
                        FROM billing.subscription_status_history c
                        GROUP BY c.stripe_subscription_id HAVING count(DISTINCT c.status) > 1)
            THEN coalesce(
                (SELECT h.status FROM billing.subscription_status_history h
                 WHERE h.stripe_subscription_id = {s}.stripe_subscription_id
                   AND h.effective_from < o.part_end
                 ORDER BY h.effective_from DESC LIMIT 1),
                (SELECT h.status FROM billing.subscription_status_history h
                 WHERE h.stripe_subscription_id = {s}.stripe_subscription_id
                 ORDER BY h.effective_from LIMIT 1))
            ELSE {s}.status END AS status"""


def _bills_part(s: str) -> str:
    """Whether subscription `s` (with `part_status`) bills part `o`: `canceled` only with an
    `ended_at`. The status is named once: PostgreSQL inlines it, and each mention would look
    the history up again."""
    return f"""{s}.started_at IS NOT NULL
      AND {s}.started_at < o.part_end
      AND ({s}.ended_at IS NULL OR {s}.ended_at > o.part_start)
      AND part_status.status = ANY(CASE WHEN {s}.ended_at IS NOT NULL
                                        THEN CAST(:billable AS text[])
                                        ELSE array_remove(CAST(:billable AS text[]), 'canceled')
                                   END)"""


def customer_parts_cte(meter: Meter) -> str:
    """CTEs `organization_parts` and `customer_parts`: one row per (customer, day, part) with
    the source's total for that customer and its organizations. A part several subscriptions of
    the customer would bill is `held`: planning sends nothing for it, and readers that compare
    what a customer should pay leave it out."""
    return f"""
organization_parts AS ({organization_parts_sql(meter)}),
customer_parts AS (
    SELECT coalesce(customer, held_customer) AS customer, day, part_start,
           min(part_end) AS part_end, sum(value)::bigint AS target,
           array_agg(organization_id ORDER BY organization_id) AS organization_ids,
           min(stamp_start) AS stamp_start, min(stamp_end) AS stamp_end,
           bool_or(held_customer IS NOT NULL) AS held
    FROM organization_parts
    WHERE customer IS NOT NULL OR held_customer IS NOT NULL
    GROUP BY coalesce(customer, held_customer), day, part_start
)
"""
