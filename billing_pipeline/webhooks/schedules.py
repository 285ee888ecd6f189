"""The recovery schedule: every hour, ask Stripe for the events the receiver did not get."""

from __future__ import annotations

import dagster as dg

from billing_pipeline.webhooks.jobs import recover_stripe_events

# Past the hour, away from the reporting flow's 02:00 and 05:00 runs.
RECOVERY_CRON = "17 * * * *"

stripe_event_recovery_schedule = dg.ScheduleDefinition(
    name="stripe_event_recovery_schedule",
    job=recover_stripe_events,
    cron_schedule=RECOVERY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Hourly at :17, recover Stripe events the receiver missed (down, unreachable or "
        "misconfigured) from Stripe's 30-day event list, and apply them. Stripe itself retries "
        "a failed delivery for up to three days; this bounds the delay to an hour and covers "
        "outages longer than Stripe's retries."
    ),
)
