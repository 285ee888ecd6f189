"""The asset checks' half of the billing verdict, read from the Dagster instance.

The status table sees the ledger and the usage; the checks see more (an invoice finalized short,
a dead-lettered webhook, a reconciliation drift, subscriptions sharing a meter). "Healthy" must
mean both agree, so the verdict takes the latest completed evaluation of every check the code
location defines, per day for a partitioned check, and names each that failed. The checks are
taken from the asset graph, not listed here: a check added later joins the verdict by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg

# Dagster's storage API for check history; not exported by `dagster`, but the instance's own.
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
)

from billing_pipeline.stripe_reporting.ledger import STRIPE_WINDOW

# Numbers from a failed evaluation's metadata shown beside it (the UI has the full tables).
FIGURES_SHOWN = 4


@dataclass(frozen=True)
class FailedCheck:
    check: str  # "stripe/meter_events:usage_after_invoice_finalized"
    partition: str | None
    severity: str
    run_id: str
    figures: tuple[tuple[str, int | float], ...] = ()
    description: str | None = None

    def problem(self) -> str:
        day = f" for {self.partition}" if self.partition else ""
        details = [f"{name} {value:g}" for name, value in self.figures]
        if self.description:
            details.append(self.description)
        why = f": {', '.join(details)}" if details else ""
        return (
            f"check {self.check}{day} failed ({self.severity.lower()}, run {self.run_id[:8]}){why}"
        )


@dataclass(frozen=True)
class CheckReading:
    """The failed checks, or why none could be read (`unread`): never "healthy" by omission."""

    failed: list[FailedCheck] = field(default_factory=list)
    unread: str | None = None


def failed_checks(instance: dg.DagsterInstance, days: Iterable[str]) -> CheckReading:
    """Every check whose latest completed evaluation failed; a partitioned check is read for
    each of `days` (an in-progress or skipped evaluation leaves the previous one standing)."""
    days = list(days)
    asset_graph = _code_location_graph()
    storage = instance.event_log_storage
    failed: list[FailedCheck] = []
    for key in sorted(asset_graph.asset_check_keys, key=lambda k: k.to_user_string()):
        partitions: Sequence[str | None] = (
            days if asset_graph.get(key).partitions_def is not None else [None]
        )
        for partition in partitions:
            records = storage.get_asset_check_execution_history(
                key,
                limit=1,
                status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
                partition_filter=None if partition is None else PartitionKeyFilter(key=partition),
            )
            evaluation = records[0].evaluation if records else None
            if evaluation is None or evaluation.passed:
                continue
            figures = tuple(
                (name, value.value)
                for name, value in evaluation.metadata.items()
                if isinstance(value, dg.IntMetadataValue | dg.FloatMetadataValue) and value.value
            )
            failed.append(
                FailedCheck(
                    check=key.to_user_string(),
                    partition=partition,
                    severity=evaluation.severity.value,
                    run_id=records[0].run_id,
                    figures=figures[:FIGURES_SHOWN],
                    description=evaluation.description,
                )
            )
    return CheckReading(failed)


def _code_location_graph() -> BaseAssetGraph[Any]:
    """The code location's asset graph, whose checks the verdict covers. Imported here, not at
    the top: `billing/status` is itself part of those definitions (and a run's
    `context.repository_def` is only set when a code server runs it, not in-process)."""
    from billing_pipeline.definitions import defs

    return defs.resolve_asset_graph()


def checked_days(first_day: date, end_day: date, now: datetime) -> list[str]:
    """The days a per-day check is read for: the status window, and every day still inside
    Stripe's window (a drift there can still be corrected, so it still needs a look)."""
    day = min(first_day, (now - STRIPE_WINDOW).date())
    days = []
    while day < max(end_day, now.date()):
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days
