"""Several subscriptions of one customer with prices on one meter: found, held back, and named.

A Stripe meter aggregates per customer, so each subscription of the customer with a price on the
meter bills the customer's whole usage: two subscriptions bill it twice. Stripe cannot tell them
apart, so attribution holds such parts (`attribution.py`: no new revision goes out for them) and
this module says which customer, subscriptions, days and units are held, what Stripe already
holds for them from before (billed once per subscription), and what each subscription's price
makes of it. The reporting run records which Stripe meter each declared meter is
(`record_stripe_meters`), the webhook flow which meter each subscription prices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import LedgerStatus
from billing_pipeline.stripe_client import RemoteMeter
from billing_pipeline.stripe_reporting.attribution import (
    CUSTOMER_VALUE_SQL,
    attribution_params,
    customer_parts_cte,
)
from billing_pipeline.stripe_reporting.invoice_list import price_amount
from billing_pipeline.usage.meters import Meter


def record_stripe_meters(engine: Engine, remote: Mapping[str, RemoteMeter]) -> None:
    """Remember the Stripe meter of each declared meter (as just verified)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO billing.stripe_meters (meter, stripe_meter_id, event_name)
                VALUES (:meter, :id, :event_name)
                ON CONFLICT (meter) DO UPDATE
                SET stripe_meter_id = EXCLUDED.stripe_meter_id,
                    event_name = EXCLUDED.event_name, recorded_at = now()
                """
            ),
            [
                {"meter": name, "id": m.id, "event_name": m.event_name}
                for name, m in sorted(remote.items())
            ],
        )


@dataclass(frozen=True)
class SharedMeter:
    """One customer whose subscriptions share a meter over some days of the window."""

    meter: str
    customer: str
    subscriptions: tuple[str, ...]
    days: tuple[date, ...]
    units: int  # the source's usage of the held parts, not reported
    reported: int  # what Stripe already holds for them from before: billed by every subscription
    # Per subscription: what its price makes of units + reported, in minor units of `currency`
    # (None: the subscription's price on the meter has no unit amount recorded).
    amounts: dict[str, tuple[int | None, str | None]]

    @property
    def at_stake(self) -> str:
        """The amounts, for a person: each subscription would bill the same usage."""
        return ", ".join(
            f"{sub}: {'?' if amount is None else amount} {currency or ''}".rstrip()
            for sub, (amount, currency) in sorted(self.amounts.items())
        )


_HELD_SQL = f"""
WITH {{parts}},
held AS (SELECT customer, day, part_start, target FROM customer_parts WHERE held),
reported AS (
    SELECT h.customer, h.part_start, coalesce((
        SELECT m.target_value FROM billing.meter_ledger m
        WHERE m.meter = :meter AND m.stripe_customer_id = h.customer
          AND m.part_start = h.part_start AND m.status = :sent
        ORDER BY m.revision DESC LIMIT 1), 0) AS reported
    FROM held h
),
shared AS (
    SELECT o.held_customer AS customer, s.subscription
    FROM organization_parts o CROSS JOIN LATERAL unnest(o.shared_subscriptions) AS s (subscription)
    WHERE o.held_customer IS NOT NULL
    GROUP BY o.held_customer, s.subscription
)
SELECT h.customer, array_agg(DISTINCT h.day ORDER BY h.day) AS days,
       {CUSTOMER_VALUE_SQL} AS units,
       CAST(CASE WHEN :last THEN (array_agg(r.reported ORDER BY part_start DESC))[1]
                 ELSE sum(r.reported) END AS bigint) AS reported,
       (SELECT array_agg(x.subscription ORDER BY x.subscription) FROM shared x
        WHERE x.customer = h.customer) AS subscriptions
FROM held h JOIN reported r USING (customer, part_start)
GROUP BY h.customer
ORDER BY h.customer
"""

_PRICES_SQL = """
SELECT p.stripe_subscription_id AS subscription, p.unit_amount_decimal AS amount, p.currency
FROM billing.subscription_prices p
JOIN billing.stripe_meters m ON m.stripe_meter_id = p.stripe_meter_id
WHERE m.meter = :meter AND p.stripe_subscription_id = ANY(:subscriptions)
"""


def shared_meters(
    engine: Engine,
    meters: Sequence[Meter],
    windows: Mapping[str, str | None],
    first_day: date,
    end_day: date,
) -> list[SharedMeter]:
    """Every (meter, customer) with held parts in [first_day, end_day)."""
    found: list[SharedMeter] = []
    with engine.connect() as connection:
        for meter in meters:
            rows = connection.execute(
                text(_HELD_SQL.format(parts=customer_parts_cte(meter))),
                {
                    **attribution_params(meter, windows.get(meter.name), first_day, end_day),
                    "last": meter.aggregation == "last",
                    "sent": LedgerStatus.SENT,
                },
            ).all()
            for row in rows:
                subscriptions = tuple(row.subscriptions or ())
                units, reported = int(row.units), int(row.reported)
                amounts: dict[str, tuple[int | None, str | None]] = dict.fromkeys(
                    subscriptions, (None, None)
                )
                for price in connection.execute(
                    text(_PRICES_SQL), {"meter": meter.name, "subscriptions": list(subscriptions)}
                ):
                    if price.amount is not None:
                        value = price_amount(units + reported, price.amount)
                        amounts[price.subscription] = (value, price.currency)
                found.append(
                    SharedMeter(
                        meter=meter.name,
                        customer=row.customer,
                        subscriptions=subscriptions,
                        days=tuple(row.days),
                        units=units,
                        reported=reported,
                        amounts=amounts,
                    )
                )
    return found
