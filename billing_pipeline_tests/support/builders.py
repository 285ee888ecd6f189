"""Build small, exact application data sets in SQL, so tests know every expected number."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Engine, text


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


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
