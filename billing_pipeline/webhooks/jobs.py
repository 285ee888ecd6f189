"""The job that applies the webhook inbox to `subscriptions`."""

from __future__ import annotations

import dagster as dg

from billing_pipeline.webhooks.assets import stripe_subscriptions

process_stripe_webhooks = dg.define_asset_job(
    "process_stripe_webhooks",
    selection=dg.AssetSelection.assets(stripe_subscriptions),
    description=(
        "Apply open Stripe webhook events from billing.webhook_inbox to the subscriptions table "
        "and check for dead letters. Launched by stripe_webhook_inbox_sensor; safe to run by "
        "hand or concurrently (events are claimed with SKIP LOCKED and applied once)."
    ),
)
