"""The webhook flow's Dagster definitions, merged into the code location by definitions.py.

Resources are not bound here: billing_pipeline/definitions.py provides them once for the whole
code location (Definitions.merge refuses two different resources under one key).
"""

from __future__ import annotations

import dagster as dg

from billing_pipeline.webhooks.assets import stripe_subscriptions, stripe_webhook_inbox
from billing_pipeline.webhooks.checks import stripe_webhook_dead_letters
from billing_pipeline.webhooks.jobs import process_stripe_webhooks, recover_stripe_events
from billing_pipeline.webhooks.schedules import stripe_event_recovery_schedule
from billing_pipeline.webhooks.sensors import stripe_webhook_inbox_sensor

defs = dg.Definitions(
    assets=[stripe_webhook_inbox, stripe_subscriptions],
    asset_checks=[stripe_webhook_dead_letters],
    jobs=[process_stripe_webhooks, recover_stripe_events],
    schedules=[stripe_event_recovery_schedule],
    sensors=[stripe_webhook_inbox_sensor],
)
