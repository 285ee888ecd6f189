"""What failed, as an `Alert`: a failed run, or a failed asset check evaluation.

The days, customers, organizations and Stripe events affected come from what the failure itself
carries: a run's partition tags and its failed steps' `Failure` metadata, a check's partition and
its metadata (`days`, `customer_ids` or a list under `customers`, `organization_ids`,
`event_ids`), so a new check that names them is covered without a change here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import dagster as dg

from billing_pipeline.alerts.messages import Alert

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
ASSET_JOB_PREFIX = "__ASSET_JOB"
DETAIL_LINES = 12


def _values(metadata: Mapping[str, Any], *keys: str) -> list[str]:
    """The list under the first of `keys` whose value is a list (a count is not a list)."""
    for key in keys:
        value = metadata.get(key)
        raw = value.value if isinstance(value, dg.MetadataValue) else value
        if isinstance(raw, list):
            return [str(item) for item in raw]
    return []


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


def _affected(metadata: Mapping[str, Any], partitions: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "days": _unique([*partitions, *_values(metadata, "days")]),
        "customers": _unique(_values(metadata, "customer_ids", "customers")),
        "organizations": tuple(
            sorted(set(_values(metadata, "organization_ids")), key=lambda o: (len(o), o))
        ),
        "events": _unique(_values(metadata, "event_ids")),
    }


def _figures(metadata: Mapping[str, Any]) -> str:
    """The check's counts (`rows 2, customers 1`), the numbers an operator reads first."""
    numbers = []
    for key, value in metadata.items():
        raw = value.value if isinstance(value, dg.MetadataValue) else value
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            numbers.append(f"{key} {raw}")
    return ", ".join(numbers)


def _run_days(tags: Mapping[str, str]) -> list[str]:
    if partition := tags.get("dagster/partition"):
        return [partition]
    if (start := tags.get(RANGE_START)) and (end := tags.get(RANGE_END)):
        first, last = date.fromisoformat(start), date.fromisoformat(end)
        return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
    return []


def _run_subject(run: dg.DagsterRun) -> str:
    """The job's name; for an ad-hoc materialization (the UI's Materialize) its assets."""
    if not run.job_name.startswith(ASSET_JOB_PREFIX):
        return run.job_name
    keys = sorted(key.to_user_string() for key in run.asset_selection or ())
    return "materialization of " + (", ".join(keys) if keys else "assets")


def run_failure_alert(
    run: dg.DagsterRun, failure: dg.DagsterEvent, step_failures: Sequence[dg.DagsterEvent], ui: str
) -> Alert:
    """One failed run: its job, the failed steps with their errors, the days it covered."""
    metadata: dict[str, Any] = {}
    details: list[str] = []
    for event in step_failures:
        data = event.step_failure_data
        user = data.user_failure_data if data else None
        error = data.error.message.strip() if data and data.error else ""
        description = (user.description if user else None) or error or (event.message or "")
        details.append(f"{event.step_key}: {description}")
        if user is not None:
            for key, value in user.metadata.items():
                if isinstance(value.value, list):
                    metadata[key] = [*metadata.get(key, []), *value.value]
    if not details:
        details.append(failure.message or "the run failed")
    text = "\n".join("\n".join(details).splitlines()[:DETAIL_LINES])
    return Alert(
        key=f"run/{run.run_id}",
        kind="run",
        title=f"run of {_run_subject(run)} failed",
        severity="error",
        run_id=run.run_id,
        run_url=f"{ui}/runs/{run.run_id}",
        details=text,
        extra={"Failed steps": ", ".join(str(e.step_key) for e in step_failures)}
        if step_failures
        else {},
        **_affected(metadata, _run_days(run.tags)),
    )


def check_failure_alert(
    storage_id: int, run_id: str, evaluation: dg.AssetCheckEvaluation, ui: str
) -> Alert:
    """One failed evaluation of an asset check, keyed by its event's storage id."""
    asset = evaluation.asset_key.to_user_string()
    partitions = [evaluation.partition] if evaluation.partition else []
    figures = _figures(evaluation.metadata)
    severity = "warning" if evaluation.severity == dg.AssetCheckSeverity.WARN else "error"
    return Alert(
        key=f"check/{storage_id}",
        kind="check",
        title=f"check {evaluation.check_name} on {asset} failed",
        severity=severity,
        run_id=run_id,
        run_url=f"{ui}/runs/{run_id}",
        details=evaluation.description or "",
        extra={"Figures": figures} if figures else {},
        **_affected(evaluation.metadata, partitions),
    )


def fingerprint(alert: Alert) -> str:
    """What a failing check names: the same set again is the same failure, not a new alert."""
    named = (alert.severity, alert.days, alert.customers, alert.organizations, alert.events)
    subject = named if any(named[1:]) else (alert.severity, alert.details)
    return hashlib.sha256(json.dumps(subject).encode()).hexdigest()[:16]
