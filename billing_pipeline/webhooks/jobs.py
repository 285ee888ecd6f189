"""The webhook flow's jobs: apply the inbox, and recover missed events first, then apply."""

from __future__ import annotations

import dagster as dg

from billing_pipeline.webhooks.assets import stripe_subscriptions, stripe_webhook_inbox

process_stripe_webhooks = dg.define_asset_job(
    "process_stripe_webhooks",
    selection=dg.AssetSelection.assets(stripe_subscriptions),
    description=(
        "Apply due Stripe webhook events from billing.webhook_inbox to the subscriptions table "
        "and check for dead letters. Launched by stripe_webhook_inbox_sensor; safe to run by "
        "hand or concurrently (events are claimed with SKIP LOCKED, applied once, and a failed "
        "one is not retried before its backoff is over)."
    ),
)

recover_stripe_events = dg.define_asset_job(
    "recover_stripe_events",
    selection=dg.AssetSelection.assets(stripe_webhook_inbox, stripe_subscriptions),
    description=(
        "List Stripe's events since the last confirmed point (GET /v1/events), store the ones "
        "the inbox lacks (events Stripe could not deliver), then apply the inbox as "
        "process_stripe_webhooks does. Run hourly by stripe_event_recovery_schedule; safe to "
        "run by hand (`billing-pipeline webhooks recover` does the listing from a shell)."
    ),
)
