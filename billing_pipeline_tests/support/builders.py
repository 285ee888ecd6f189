"""Build small, exact application data sets in SQL, so tests know every expected number."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Engine, text

from billing_pipeline.stripe_reporting.identifiers import (
    day_start,
    event_identifier,
    event_timestamp,
)
from billing_pipeline.stripe_reporting.ledger import LedgerRow, new_row
from billing_pipeline.usage.meters import TEMPERATURE_READINGS


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def pending_day_row(customer: str, day: date, value: int, organization_id: int) -> LedgerRow:
    """A first revision of a whole day of readings, as planning writes it for a `day` meter:
    for sender tests that insert ledger rows directly."""
    return new_row(
        TEMPERATURE_READINGS,
        "day",
        customer,
        (midnight(day), midnight(day + timedelta(days=1))),
        1,
        value,
        value,
        [organization_id],
        datetime.now(UTC),
        None,
    )


def add_organization(engine: Engine, organization_id: int, customer: str | None = None) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO organizations (id, name) VALUES (:id, :name)"),
            {"id": organization_id, "name": f"Org {organization_id}"},
        )
        if customer is not None:
            connection.execute(
                text(
                    "INSERT INTO subscriptions (organization_id, stripe_customer_id, "
                    "stripe_subscription_id, status, started_at) "
                    "VALUES (:org, :customer, :subscription, 'active', :started)"
                ),
                {
                    "org": organization_id,
                    "customer": customer,
                    "subscription": f"sub_{customer}",
                    "started": datetime(2024, 1, 1, tzinfo=UTC),
                },
            )


def add_sensor(
    engine: Engine,
    sensor_id: int,
    organization_id: int,
    created_at: datetime,
    deactivated_at: datetime | None = None,
) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sensors (id, organization_id, serial_number, created_at, "
                "deactivated_at) VALUES (:id, :org, :serial, :created, :deactivated)"
            ),
            {
                "id": sensor_id,
                "org": organization_id,
                "serial": f"SN-{sensor_id}",
                "created": created_at,
                "deactivated": deactivated_at,
            },
        )


def add_readings(
    engine: Engine,
    sensor_id: int,
    day: date,
    count: int,
    *,
    ingested_at: datetime | None = None,
) -> None:
    """`count` readings spread over the UTC day, each ingested at `ingested_at` if given."""
    step = timedelta(days=1) / max(count, 1)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO temperature_readings (sensor_id, recorded_at, celsius, ingested_at) "
                "VALUES (:sensor, :recorded, 4.5, coalesce(:ingested, :recorded))"
            ),
            [
                {"sensor": sensor_id, "recorded": midnight(day) + i * step, "ingested": ingested_at}
                for i in range(count)
            ],
        )


def add_readings_at(engine: Engine, sensor_id: int, times: list[datetime]) -> None:
    """One reading of the sensor at each instant, ingested when recorded."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO temperature_readings (sensor_id, recorded_at, celsius, ingested_at) "
                "VALUES (:sensor, :recorded, 4.5, :recorded)"
            ),
            [{"sensor": sensor_id, "recorded": at} for at in times],
        )


def add_ledger_row(
    engine: Engine,
    organization_id: int,
    status: str,
    *,
    meter: str = "temperature_readings",
    day: date | None = None,
    revision: int = 1,
    value: int = 5,
    target: int | None = None,
    customer: str = "cus_A",
    age: timedelta = timedelta(0),
    reason: str | None = None,
    error_code: str | None = None,
) -> str:
    """One ledger row as the reporting asset would have left it, `age` old; returns its identifier.

    `day` defaults to three days ago: inside Stripe's window and already billed.
    """
    now = datetime.now(UTC)
    day = day or now.date() - timedelta(days=3)
    start, end = day_start(day), day_start(day + timedelta(days=1))
    identifier = event_identifier(meter, meter, customer, start, revision, value)
    at = now - age
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO billing.meter_ledger
                    (identifier, meter, stripe_customer_id, day, part_start, part_end,
                     revision, event_name,
                     organization_ids, value, target_value, event_timestamp, status,
                     status_reason, error_code, created_at, updated_at, sent_at)
                VALUES (:identifier, :meter, :customer, :day, :start, :end, :revision, :meter,
                        ARRAY[CAST(:org AS bigint)], :value, :target, :ts, :status, :reason,
                        :code, :at, :at, CASE WHEN :sent THEN CAST(:at AS timestamptz) END)
                """
            ),
            {
                "identifier": identifier,
                "meter": meter,
                "org": organization_id,
                "day": day,
                "revision": revision,
                "customer": customer,
                "value": value,
                "target": value if target is None else target,
                "start": start,
                "end": end,
                "ts": event_timestamp(start, end, at),
                "status": status,
                "sent": status == "sent",
                "reason": reason,
                "code": error_code,
                "at": at,
            },
        )
    return identifier
