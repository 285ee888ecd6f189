"""A month of billing, end to end: the emulator's signed webhooks into the project's receiver,
and what the source says each invoice line must be."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text

from billing_pipeline.webhooks.app import create_app
from billing_pipeline_tests.support.dagster_runs import Billing
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
