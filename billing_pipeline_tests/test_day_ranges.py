"""One way to write a range of days: inclusive, counted."""

from __future__ import annotations

from datetime import date

from billing_pipeline.day_ranges import day_range, last_complete_days

DEC_5 = date(2026, 12, 5)


def test_a_range_is_written_inclusive_and_counted() -> None:
    assert day_range(DEC_5, date(2026, 12, 7)) == "2026-12-05 to 2026-12-06 (2 days)"
    assert day_range(DEC_5, date(2026, 12, 6)) == "2026-12-05 (1 day)"
    assert day_range(DEC_5, DEC_5) == "no days"


def test_the_last_days_are_the_complete_ones_today_excluded() -> None:
    first, end = last_complete_days(7, date(2026, 12, 8))
    assert (first, end) == (date(2026, 12, 1), date(2026, 12, 8))
    assert day_range(first, end) == "2026-12-01 to 2026-12-07 (7 days)"
