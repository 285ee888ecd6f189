"""The dry run shown to a person: a terminal table (CLI) or run metadata (the UI's run config)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
from sqlalchemy import Engine

from billing_pipeline.day_ranges import day_range
from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.stripe_reporting.dry_run import DryRun, dry_run
from billing_pipeline.stripe_reporting.planning import MeterTarget

HEADER = ("day", "meter", "customer", "revision", "value", "day total", "why")
ROWS_SHOWN = 100
NOTHING_TO_SEND = "nothing to send"


class ReportingConfig(dg.Config):
    """Run configuration of `stripe/meter_events`."""

    dry_run: bool = False  # plan, report what would be sent, roll back; send nothing


CANCEL = "cancel first (usage went down; an adjustment, never a negative value)"


def _rows(result: DryRun) -> list[tuple[object, ...]]:
    cancels: list[tuple[object, ...]] = [
        (r.day, r.meter, r.stripe_customer_id, r.revision, r.value, r.target_value, CANCEL)
        for r in result.to_cancel
    ]
    return cancels + [
        (
            r.row.day,
            r.row.meter,
            r.row.stripe_customer_id,
            r.row.revision,
            r.row.value,
            r.row.target_value,
            r.why,
        )
        for r in result.would_send
    ]


def render_text(result: DryRun, first_day: date, end_day: date) -> str:
    rows = [tuple(map(str, row)) for row in _rows(result)]
    lines = [f"dry run {day_range(first_day, end_day)}: nothing written, nothing sent"]
    if not rows:
        lines += [NOTHING_TO_SEND, _summary(result)]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [HEADER, tuple("-" * w for w in widths), *rows]
    ]
    lines.append(_summary(result))
    return "\n".join(lines)


def _summary(result: DryRun) -> str:
    return (
        f"would send {len(result.would_send)} meter events; {len(result.expired)} corrections "
        f"outside Stripe's window (expired); {result.to_settle} in-doubt rows to settle; "
        f"{len(result.to_cancel)} events to cancel; {len(result.uncorrectable)} decreases past "
        "Stripe's cancel window (uncorrectable, not sent)"
    )


def dry_run_result(
    engine: Engine, targets: Sequence[MeterTarget], first_day: date, end_day: date
) -> dg.MaterializeResult:
    """The asset's dry-run branch: plan, roll back, and show what a real run would send."""
    result = dry_run(engine, targets, first_day, end_day, datetime.now(UTC))
    per_meter = Counter(r.row.meter for r in result.would_send)
    metadata: dict[str, Any] = {
        "dry_run": True,
        "summary": _summary(result),
        "would_send": len(result.would_send),
        "would_expire": len(result.expired),
        "in_doubt_to_settle": result.to_settle,
        "would_cancel": len(result.to_cancel),
        "would_record_uncorrectable": len(result.uncorrectable),
        **{f"would_send/{meter}": n for meter, n in sorted(per_meter.items())},
        "would_send_details": markdown_table(
            HEADER, _rows(result)[:ROWS_SHOWN], numeric=("revision", "value", "day total")
        ),
    }
    return dg.MaterializeResult(metadata=metadata)
