"""Both kinds of Stripe meter the pipeline reports to, for the `meter_kind` fixture.

`raw`: meters created without `event_time_window` (every event counts), as older accounts have.
`pre_aggregated`: meters created as `billing-pipeline stripe sync-meters` does
(`event_time_window=hour`: per customer and hour only the newest event counts).
"""

from __future__ import annotations

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.usage.meters import METERS
from stripe_emulator.control import EmulatorControl

KINDS = {"raw": None, "pre_aggregated": "hour"}


def recreate_meters(control: EmulatorControl, billing: StripeBilling, kind: str) -> None:
    """Empty the emulator and create the declared meters as meters of `kind`."""
    control.reset()
    for meter in METERS:
        billing.create_meter(meter, event_time_window=KINDS[kind])
