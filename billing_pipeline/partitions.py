"""One partition per UTC day; the newest partition is the last complete day."""

from __future__ import annotations

import dagster as dg

FIRST_BILLED_DAY = "2025-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_BILLED_DAY, timezone="UTC")
