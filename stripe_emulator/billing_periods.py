"""Where a subscription's billing periods start and end: Stripe's billing cycle anchor.

Rules (Stripe docs "Billing cycle" / "Set the billing cycle date", API reference
`POST /v1/subscriptions` `billing_cycle_anchor` and `billing_cycle_anchor_config`):
- Without an anchor, the anchor is the subscription's start and every period is one interval.
- `billing_cycle_anchor` (a timestamp after the start, at most one interval later) or
  `billing_cycle_anchor_config` (`day_of_month`, optional `month`, `hour`, `minute`, `second`:
  the first such instant after the start) makes the first period a shorter one ending at the
  anchor; later periods run from anchor to anchor.
- Period boundaries are the anchor plus whole intervals, each computed from the anchor, so a
  month anchored on the 31st ends on Feb 28 and then again on Mar 31 (Stripe: "the last day of
  the month" for shorter months). `config` fields left out take the start's hour, minute and
  second (our reading: Stripe's reference does not say).
- `backdate_start_date` (API reference: "a past timestamp to backdate the subscription's start
  date to"; docs "Backdate subscriptions") moves `start_date` and the first period's start into
  the past; the anchor is still computed from, and checked against, the creation time. Combined
  with an anchor the first period runs from the backdated start to the anchor, so its invoice
  bills that whole span ("a prorated item on the next invoice for the time between the
  backdated start date and the billing cycle anchor"). Without an anchor Stripe invoices the
  backdated time at once and anchors at creation: not emulated, a 400 says so.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Any

from stripe_emulator.errors import invalid
from stripe_emulator.pagination import int_param

INTERVALS = ("day", "week", "month", "year")
# Stripe's limit: an interval_count of at most one year.
MAX_COUNT = {"day": 365, "week": 52, "month": 12, "year": 1}
_CONFIG_FIELDS = {"day_of_month", "month", "hour", "minute", "second"}


def _month_shift(anchor: datetime, months: int, day: int) -> datetime:
    total = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(total, 12)
    clamped = min(day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=clamped)


def boundary(anchor: int, interval: str, count: int, times: int, day: int | None = None) -> int:
    """`anchor` moved by `times` x `count` intervals. Months keep `day` (default: the anchor's;
    a `day_of_month=31` anchor clamped to June 30 still ends July on the 31st), clamped to the
    month's length."""
    if interval == "day":
        return anchor + times * count * 86400
    if interval == "week":
        return anchor + times * count * 7 * 86400
    months = times * count * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(anchor, UTC)
    return int(_month_shift(start, months, day or start.day).timestamp())


def next_boundary(
    anchor: int, interval: str, count: int, after: int, day: int | None = None
) -> int:
    """The first period boundary strictly after `after` (which is at or after the anchor)."""
    times = 1
    while (end := boundary(anchor, interval, count, times, day)) <= after:
        times += 1
    return end


def anchor_from_config(start: int, config: Any) -> int:
    """The first instant after `start` matching `billing_cycle_anchor_config`."""
    begin = datetime.fromtimestamp(start, UTC)
    values: dict[str, Any] = {}
    for name, low, high, default in (
        ("day_of_month", 1, 31, None),
        ("month", 1, 12, None),
        ("hour", 0, 23, begin.hour),
        ("minute", 0, 59, begin.minute),
        ("second", 0, 59, begin.second),
    ):
        value = int_param(config, name, required=name == "day_of_month")
        if value is not None and not low <= value <= high:
            raise invalid(
                f"billing_cycle_anchor_config[{name}] must be between {low} and {high}.",
                param=f"billing_cycle_anchor_config[{name}]",
            )
        values[name] = default if value is None else value
    for offset in range(0, 25):
        year, month = divmod(begin.year * 12 + begin.month - 1 + offset, 12)
        month += 1
        if values["month"] is not None and month != values["month"]:
            continue
        day = min(int(values["day_of_month"]), calendar.monthrange(year, month)[1])
        candidate = datetime(
            year,
            month,
            day,
            int(values["hour"]),
            int(values["minute"]),
            int(values["second"]),
            tzinfo=UTC,
        )
        if candidate > begin:
            return int(candidate.timestamp())
    raise invalid("No billing cycle anchor matches.", param="billing_cycle_anchor_config")


def first_period(
    start: int, params: dict[str, Any], interval: str, count: int
) -> tuple[int, int, dict[str, Any] | None]:
    """(anchor, first period end, the anchor config to show) for a new subscription."""
    natural_end = boundary(start, interval, count, 1)
    config = params.get("billing_cycle_anchor_config")
    if config is not None and params.get("billing_cycle_anchor") is not None:
        raise invalid(
            "You may only specify one of billing_cycle_anchor and billing_cycle_anchor_config.",
            param="billing_cycle_anchor_config",
        )
    if config is not None:
        anchor = anchor_from_config(start, config)
        shown = {name: int_param(config, name, required=False) for name in sorted(_CONFIG_FIELDS)}
    elif params.get("billing_cycle_anchor") is not None:
        anchor = int_param(params, "billing_cycle_anchor") or 0
        shown = None
        if anchor < start:
            raise invalid(
                "billing_cycle_anchor cannot be in the past.", param="billing_cycle_anchor"
            )
    else:
        return start, natural_end, None
    if anchor > natural_end:
        raise invalid(
            "billing_cycle_anchor cannot be later than the next natural billing date "
            f"({natural_end}) for the subscription.",
            param="billing_cycle_anchor",
        )
    return anchor, anchor if anchor > start else natural_end, shown


def backdated_start(params: dict[str, Any], now: int) -> int | None:
    """The backdated start of a new subscription created at `now`, or None (it starts now)."""
    start = int_param(params, "backdate_start_date", required=False)
    if start is None:
        return None
    if start >= now:
        raise invalid("backdate_start_date must be in the past.", param="backdate_start_date")
    if params.get("billing_cycle_anchor") is None and not params.get("billing_cycle_anchor_config"):
        raise invalid(
            "The Stripe emulator does not emulate backdate_start_date without "
            "billing_cycle_anchor or billing_cycle_anchor_config (Stripe invoices the "
            "backdated time at once).",
            param="backdate_start_date",
        )
    return start
