"""The webhook flow's asset `stripe_subscriptions`: the `subscriptions` rows kept in step.

Each materialization applies every open inbox event, so every batch shows in the asset's history
with its counts.
"""

from __future__ import annotations

import dagster as dg

from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.webhooks.processing import process_open_events

GROUP = "stripe_webhooks"


@dg.asset(
    group_name=GROUP,
    kinds={"postgres", "stripe"},
    description=(
        "The `subscriptions` rows kept in step with Stripe webhooks: each materialization "
        "applies every open inbox event, oldest first by Stripe's `created`, and records how "
        "many were processed, ignored, failed (to be retried) and dead-lettered. Stripe's thin "
        "meter-error events are applied here too: their full body is fetched from Stripe "
        "(needs the Stripe resource's secret key) and the ledger rows they name are marked "
        "rejected."
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
