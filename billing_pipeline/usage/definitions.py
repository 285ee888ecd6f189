"""The usage flow's Dagster definitions: one daily `usage/<meter>` asset per declared meter."""

from __future__ import annotations

import dagster as dg

from billing_pipeline.usage.assets import build_usage_assets

defs = dg.Definitions(assets=build_usage_assets())
