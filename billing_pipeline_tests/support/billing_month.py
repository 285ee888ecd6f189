"""A month of billing on a Stripe test clock, end to end: the emulator's subscriptions and
invoices, its signed webhooks into the project's receiver, the processing job, and the project's
billing runs, in the order a deployment would run them.

Time moves in "moments". At each one the test clock is advanced (Stripe rolls periods, cancels,
creates and finalizes invoices, and delivers their events), the inbox is processed, the readings
recorded before that instant are written (as the application would have), and then either the
daily run of the day before (at 02:00, as the schedule does) or a period-close run for every
boundary `closed_periods` finds (what `period_close_sensor` requests). Readings written after
their day are followed by a run of that day, as `late_readings_sensor` requests. Both sensors read
the wall clock, which a test clock does not move, so the harness stands in for their ticks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import stripe
from sqlalchemy import Engine, text

from billing_pipeline.stripe_reporting.period_close import PERIOD_CLOSE_TAG, closed_periods
from billing_pipeline.webhooks.app import create_app
from billing_pipeline_tests.support.dagster_runs import BILLING_ASSETS, Billing, run_webhook_job
from billing_pipeline_tests.support.invoicing import advance_test_clock
from billing_pipeline_tests.support.webhooks import serve


@contextmanager
def receiving_webhooks(billing: Billing, webhook_secret: str) -> Iterator[str]:
    """The project's receiver on real HTTP, registered as the emulator's webhook endpoint."""
    with serve(create_app(billing.database_url, [webhook_secret])) as url:
        billing.emulator.set_webhook_endpoint(f"{url}/webhooks/stripe")
        try:
            yield url
        finally:
            billing.emulator.set_webhook_endpoint(None)


@dataclass(frozen=True)
class Reading:
    sensor_id: int
    recorded_at: datetime
    ingested_at: datetime


@dataclass
class BillingMonth:
    """The clock, the readings still to be written, and the runs made so far."""

    billing: Billing
    client: stripe.StripeClient
    clock_id: str
    now: datetime
    pending: list[Reading] = field(default_factory=list)
    close_runs: set[str] = field(default_factory=set)
    failed_runs: list[str] = field(default_factory=list)

    def reading(self, sensor_id: int, recorded_at: datetime, ingested_at: datetime | None = None):
        """A reading the application will write once the clock reaches `ingested_at`."""
        self.pending.append(Reading(sensor_id, recorded_at, ingested_at or recorded_at))

    def advance(self, to: datetime) -> None:
        """Move Stripe's time, apply its webhooks, write the readings that exist by then."""
        advance_test_clock(self.client, self.clock_id, int(to.timestamp()))
        self.now = to
        assert run_webhook_job(self.billing.instance, self.billing.resources()).success
        due = [r for r in self.pending if r.ingested_at <= to]
        self.pending = [r for r in self.pending if r.ingested_at > to]
        if due:
            with self.billing.engine.begin() as connection:
                connection.execute(
                    text(
                        "INSERT INTO temperature_readings "
                        "(sensor_id, recorded_at, celsius, ingested_at) "
                        "VALUES (:sensor, :recorded, 4.5, :ingested)"
                    ),
                    [_row(r) for r in due],
                )
        late = {r.recorded_at.date() for r in due if r.ingested_at.date() > r.recorded_at.date()}
        for day in sorted(late):
            self.run(day)

    def run(self, day: date, tags: dict[str, str] | None = None) -> None:
        result = dg.materialize(
            BILLING_ASSETS,
            partition_key=day.isoformat(),
            instance=self.billing.instance,
            resources=self.billing.resources(),
            tags=tags or {},
            raise_on_error=False,
        )
        if not result.success:
            self.failed_runs.append(f"{day} {tags or ''}")

    def close_passed_periods(self) -> int:
        """One period-close run per boundary passed (Dagster's run key makes it once each)."""
        started = 0
        for period in closed_periods(self.billing.engine, self.now):
            if period.run_key not in self.close_runs:
                self.close_runs.add(period.run_key)
                self.run(
                    date.fromisoformat(period.partition_key),
                    {PERIOD_CLOSE_TAG: period.ended_at.isoformat()},
                )
                started += 1
        return started

    def live_through(self, until: datetime, boundaries: list[datetime]) -> None:
        """Daily runs at 02:00 each day, and a close run two minutes after each boundary."""
        moments = [(b + timedelta(minutes=2), "close") for b in boundaries]
        day = self.now.date() + timedelta(days=1)
        while (at := datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=2)) <= until:
            moments.append((at, "daily"))
            day += timedelta(days=1)
        for at, kind in sorted(moments):
            if at <= self.now or at > until:
                continue
            self.advance(at)
            if kind == "close":
                self.close_passed_periods()
            else:
                self.run(at.date() - timedelta(days=1))
        if self.now < until:
            self.advance(until)


def _row(reading: Reading) -> dict[str, Any]:
    return {
        "sensor": reading.sensor_id,
        "recorded": reading.recorded_at,
        "ingested": reading.ingested_at,
    }


def subscription_period(subscription: Any) -> tuple[datetime, datetime]:
    item = subscription["items"]["data"][0]
    return (
        datetime.fromtimestamp(item["current_period_start"], tz=UTC),
        datetime.fromtimestamp(item["current_period_end"], tz=UTC),
    )


def readings_in(engine: Engine, organization: int, start: datetime, end: datetime) -> int:
    """The source's readings of `organization` in [start, end)."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM temperature_readings r JOIN sensors s "
                    "ON s.id = r.sensor_id WHERE s.organization_id = :org "
                    "AND r.recorded_at >= :start AND r.recorded_at < :end"
                ),
                {"org": organization, "start": start, "end": end},
            ).scalar_one()
        )


def sensors_active_at(engine: Engine, organization: int, at: datetime) -> int:
    """The source's active sensors of `organization` at the instant `at`."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM sensors WHERE organization_id = :org "
                    "AND created_at < :at AND (deactivated_at IS NULL OR deactivated_at >= :at)"
                ),
                {"org": organization, "at": at},
            ).scalar_one()
        )
