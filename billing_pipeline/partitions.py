"""One partition per UTC day, today's included, from the first day there is data to bill.

Today is a partition (`end_offset=1`) so that a billing period ending during the day can be
reported before its invoice finalizes: a period-close run computes today's partial usage and
plans only the parts that have ended by then (`planning.py`). The daily schedule still bills
yesterday, once the day is complete (`schedules.py`).

The first partition is `BILLING_PARTITIONS_START` (the first UTC day of the source data): the UI
counts every partition since then as missing until it is computed, so a start long before the
data would show days that can never hold anything. The demo sets it to its first seeded day.
"""

from __future__ import annotations

from datetime import date

import dagster as dg

from billing_pipeline import config

DEFAULT_PARTITIONS_START = "2025-01-01"


def first_partition_day() -> date:
    """`BILLING_PARTITIONS_START`, or the default; a bad value fails the code location's load
    naming the variable."""
    value = config.env(config.PARTITIONS_START) or DEFAULT_PARTITIONS_START
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{config.PARTITIONS_START} must be a day like 2026-01-31, not {value!r}"
        ) from None


FIRST_BILLED_DAY = first_partition_day()

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=FIRST_BILLED_DAY.isoformat(), timezone="UTC", end_offset=1
)
