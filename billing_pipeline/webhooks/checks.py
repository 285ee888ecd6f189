"""The dead-letter check: red while any Stripe event has used up its attempts."""

from __future__ import annotations

import dagster as dg

from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.resources import PostgresResource
from billing_pipeline.webhooks import inbox
from billing_pipeline.webhooks.assets import stripe_subscriptions
from billing_pipeline.webhooks.processing import MAX_ATTEMPTS


@dg.asset_check(
    asset=stripe_subscriptions,
    description=(
        f"Fails while any Stripe event is dead-lettered (its handler failed {MAX_ATTEMPTS} times); "
        "lists the event ids and errors. Fix the cause, then `billing-pipeline webhooks requeue "
        "EVENT_ID` gives the event fresh attempts."
    ),
)
def stripe_webhook_dead_letters(postgres: PostgresResource) -> dg.AssetCheckResult:
    total, letters = inbox.dead_letters(postgres.engine())
    return dg.AssetCheckResult(
        passed=total == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "dead_lettered": total,
            "event_ids": dg.MetadataValue.json([letter.event_id for letter in letters]),
            "events": markdown_table(
                ("event", "type", "attempts", "last error"),
                [
                    (f"`{letter.event_id}`", letter.event_type, letter.attempts, letter.last_error)
                    for letter in letters
                ],
            ),
        },
    )
