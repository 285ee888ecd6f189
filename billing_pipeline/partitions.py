"""One partition per UTC day, today's included.

Today is a partition (`end_offset=1`) so that a billing period ending during the day can be
reported before its invoice finalizes: a period-close run computes today's partial usage and
plans only the parts that have ended by then (`planning.py`). The daily schedule still bills
yesterday, once the day is complete (`schedules.py`).
"""

from __future__ import annotations

import dagster as dg

FIRST_BILLED_DAY = "2025-01-01"

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=FIRST_BILLED_DAY, timezone="UTC", end_offset=1
)
