"""The webhook flow's assets: the inbox completed from Stripe's event list, and the
`subscriptions` rows kept in step with it.

Each materialization shows its counts in the asset's history (numeric metadata is plotted).
"""

from __future__ import annotations

import dagster as dg

from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.webhooks.handlers import SNAPSHOT_EVENT_TYPES
from billing_pipeline.webhooks.processing import process_open_events
from billing_pipeline.webhooks.recovery import recover_missed_events

GROUP = "stripe_webhooks"


@dg.asset(
    group_name=GROUP,
    kinds={"postgres", "stripe"},
    description=(
        "billing.webhook_inbox: every Stripe event the receiver verified and stored. The "
        "receiver writes it outside Dagster; `stripe_webhook_inbox_sensor` records each batch it "
        "stored as a materialization (`received`, the inbox ids). A run of this asset "
        "completes it from Stripe's event list (`GET /v1/events`, 30 days, "
        f"types {', '.join(SNAPSHOT_EVENT_TYPES)}): events listed since the last confirmed point "
        "that the inbox lacks are stored exactly as the receiver stores them. Needs the Stripe "
        "resource's secret key."
    ),
)
def stripe_webhook_inbox(
    postgres: PostgresResource, stripe: StripeResource
) -> dg.MaterializeResult:
    client = stripe.client()
    if client is None:
        raise dg.Failure("STRIPE_SECRET_KEY is not set: Stripe's event list cannot be read")
    result = recover_missed_events(postgres.engine(), client)
    return dg.MaterializeResult(
        metadata={
            "listed": result.listed,
            "recovered": len(result.recovered),
            "refused": len(result.refused),
            "listed_since": dg.MetadataValue.text(
                "all of Stripe's 30 days"
                if result.listed_since is None
                else result.listed_since.isoformat()
            ),
            "confirmed_until": dg.MetadataValue.text(
                "nothing listed yet"
                if result.confirmed_until is None
                else result.confirmed_until.isoformat()
            ),
            "retention_gap": result.retention_gap,
            "recovered_event_ids": dg.MetadataValue.json(result.recovered),
            "refused_event_ids": dg.MetadataValue.json(result.refused),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"postgres", "stripe"},
    deps=[stripe_webhook_inbox],
    description=(
        "The `subscriptions` rows kept in step with Stripe webhooks: each materialization "
        "applies every due inbox event, oldest first by Stripe's `created`, and records how "
        "many were processed, ignored, failed (retried after a backoff) and dead-lettered. "
        "Events that tie on `created` are settled with the subscription's current state from "
        "Stripe. Stripe's thin meter-error events are applied here too: their full body is "
        "fetched from Stripe and the ledger rows they name are marked rejected. Both need the "
        "Stripe resource's secret key."
    ),
)
def stripe_subscriptions(
    postgres: PostgresResource, stripe: StripeResource
) -> dg.MaterializeResult:
    result = process_open_events(postgres.engine(), stripe=stripe.client())
    return dg.MaterializeResult(
        metadata={
            "processed": len(result.processed),
            "ignored": len(result.ignored),
            "failed": len(result.failed),
            "dead_lettered": len(result.dead_lettered),
            "skipped_held_elsewhere": result.skipped,
            "failed_event_ids": dg.MetadataValue.json(result.failed),
            "dead_lettered_event_ids": dg.MetadataValue.json(result.dead_lettered),
        }
    )
