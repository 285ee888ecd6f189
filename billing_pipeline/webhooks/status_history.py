"""Which status a subscription had from when, as the webhook flow learns it.

Attribution bills each part of a day by the status its subscription had then
(`stripe_reporting/attribution.py`), so a subscription paused after its trial and resumed later
bills its trial days and its days since the resume, and never its paused days, whenever the
reporting runs. Every snapshot adds a point (status, the instant it took effect); points are
facts about the past, so an event applied late still adds its own, and only a newer event may
rewrite the status of the same instant.

The instant is Stripe's own timestamp where the subscription carries one for that status, else
the event's `created`:

- `trialing`: `trial_start`; a subscription that starts in trial is trialing from its start;
- `paused`: `trial_end` when the trial ended before the event (Stripe pauses a trial that ends
  without a payment method); a pause from the API takes effect at the event;
- `canceled`: `ended_at` (until then the subscription kept its former status);
- anything else (`active` after a trial or a resume, `past_due`, …): the event's `created`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from billing_pipeline.webhooks.payloads import timestamp


def effective_from(subscription: Mapping[str, Any], status: str, created: datetime) -> datetime:
    """When the snapshot's status took effect (see the module's list)."""
    if status == "trialing":
        started = timestamp(subscription.get("trial_start"), "trial_start")
    elif status == "paused":
        started = timestamp(subscription.get("trial_end"), "trial_end")
    elif status == "canceled":
        started = timestamp(subscription.get("ended_at"), "ended_at")
    else:
        started = None
    return started if started is not None and started <= created else created


def record_status(
    connection: Connection,
    subscription_id: str,
    status: str,
    effective: datetime,
    created: datetime,
) -> None:
    """Add the point; at the same instant the newer event's status wins, an older one never."""
    connection.execute(
        text(
            """
            INSERT INTO billing.subscription_status_history
                (stripe_subscription_id, effective_from, status, event_created)
            VALUES (:subscription, :effective, :status, :created)
            ON CONFLICT (stripe_subscription_id, effective_from) DO UPDATE
            SET status = EXCLUDED.status, event_created = EXCLUDED.event_created,
                recorded_at = now()
            WHERE EXCLUDED.event_created >= subscription_status_history.event_created
            """
        ),
        {
            "subscription": subscription_id,
            "effective": effective,
            "status": status,
            "created": created,
        },
    )
