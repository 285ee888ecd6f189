"""Jobs over the billing assets."""

from __future__ import annotations

import dagster as dg

from billing_pipeline.partitions import daily_partitions

daily_billing_job = dg.define_asset_job(
    name="daily_billing",
    selection=dg.AssetSelection.groups("usage", "stripe"),
    partitions_def=daily_partitions,
    description="Compute one UTC day's usage per meter and report it to Stripe exactly once.",
)
