"""Stripe setup as code: the meters the declarations need, created once and checked before use.

A Stripe meter cannot change its aggregation after creation, and a meter with the wrong formula
bills every customer wrongly, so a mismatch is an error for a person to resolve, never something
to paper over.

New meters are created pre-aggregated per hour (`event_time_window=hour`: Stripe keeps the
newest event per customer and hour), which makes every resend harmless (each revision of a part
of a day stays in one hour window) and lets a day be cut at a billing period's end: the part
before it and the part after it sit in different windows. Existing meters keep working: daily
pre-aggregated ones bill whole days (they cannot hold two parts of one day apart), raw ones get
differences. The pipeline reads the kind from Stripe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from billing_pipeline.stripe_client import RemoteMeter, StripeBilling
from billing_pipeline.usage.meters import Meter


class MeterMismatchError(Exception):
    """A declared meter is missing in Stripe or differs from its declaration."""


@dataclass(frozen=True)
class SyncResult:
    created: list[str]
    unchanged: list[str]


def _active_by_event_name(remote: Sequence[RemoteMeter]) -> dict[str, RemoteMeter]:
    return {m.event_name: m for m in remote if m.status == "active"}


SUPPORTED_WINDOWS = (None, "day", "hour")
# What `sync-meters` creates.
NEW_METER_WINDOW = "hour"


def _mismatch(meter: Meter, remote: RemoteMeter) -> str | None:
    if remote.event_time_window not in SUPPORTED_WINDOWS:
        return (
            f"Stripe meter {remote.id} for event {meter.event_name!r} is pre-aggregated per "
            f"{remote.event_time_window!r}, which the pipeline does not know: deactivate it in "
            "Stripe and run `billing-pipeline stripe sync-meters`"
        )
    if remote.formula != meter.aggregation:
        return (
            f"Stripe meter {remote.id} for event {meter.event_name!r} aggregates with "
            f"{remote.formula!r} but {meter.name!r} is declared {meter.aggregation!r}; "
            "Stripe meters cannot be changed: deactivate it in Stripe and run "
            "`billing-pipeline stripe sync-meters`"
        )
    return None


def sync_meters(stripe_billing: StripeBilling, meters: Sequence[Meter]) -> SyncResult:
    """Create the missing meters (pre-aggregated per hour); refuse, changing nothing, if any
    existing one differs from its declaration. Existing raw meters are left as they are."""
    remote = _active_by_event_name(stripe_billing.list_meters())
    problems = [
        p for m in meters if m.event_name in remote and (p := _mismatch(m, remote[m.event_name]))
    ]
    if problems:
        raise MeterMismatchError("; ".join(problems))
    created, unchanged = [], []
    for meter in meters:
        if meter.event_name in remote:
            unchanged.append(meter.name)
        else:
            stripe_billing.create_meter(meter, event_time_window=NEW_METER_WINDOW)
            created.append(meter.name)
    return SyncResult(created=created, unchanged=unchanged)


def verify_meters(stripe_billing: StripeBilling, meters: Sequence[Meter]) -> dict[str, RemoteMeter]:
    """The Stripe meter for each declared meter, or an error naming every problem."""
    remote = _active_by_event_name(stripe_billing.list_meters())
    problems = []
    for meter in meters:
        if meter.event_name not in remote:
            problems.append(
                f"no active Stripe meter for event {meter.event_name!r} ({meter.name}); "
                "run `billing-pipeline stripe sync-meters`"
            )
        elif problem := _mismatch(meter, remote[meter.event_name]):
            problems.append(problem)
    if problems:
        raise MeterMismatchError("; ".join(problems))
    return {m.name: remote[m.event_name] for m in meters}
