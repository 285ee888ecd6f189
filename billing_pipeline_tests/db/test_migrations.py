"""Migrations build the schema the code expects, and undo cleanly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from billing_pipeline.db import migrate
from billing_pipeline.db.engine import make_engine
from billing_pipeline.db.schema import (
    BILLING_SCHEMA,
    LEDGER_FILLFACTOR,
    app_metadata,
    billing_metadata,
)
from billing_pipeline_tests.support.databases import create_database, drop_database


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[str]:
    url = create_database(postgres_server_url, "billing_migrations")
    yield url
    drop_database(postgres_server_url, url)


def _tables(url: str) -> dict[str | None, set[str]]:
    engine = make_engine(url, pool_size=1)
    inspector = inspect(engine)
    tables = {schema: set(inspector.get_table_names(schema=schema)) for schema in (None, "billing")}
    engine.dispose()
    return tables


def _diff_against_models(url: str) -> list[object]:
    engine = make_engine(url, pool_size=1)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "include_name": lambda name, type_, parents: (
                    type_ != "schema" or name in (None, BILLING_SCHEMA)
                ),
                "compare_type": True,
            },
        )
        # Alembic compares against several MetaData at once (as env.py does); its stub says one.
        diff = compare_metadata(context, [app_metadata, billing_metadata])  # type: ignore[arg-type]
    engine.dispose()
    return [d for d in diff if not (isinstance(d, tuple) and "alembic_version" in str(d))]


def test_upgrade_from_empty_matches_models(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    assert _diff_against_models(empty_database) == []


def test_downgrade_removes_everything_and_upgrade_again_works(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    migrate.downgrade(empty_database, "base")
    tables = _tables(empty_database)
    assert tables[None] == set()
    assert tables["billing"] == {"alembic_version"}

    migrate.upgrade(empty_database)
    assert _diff_against_models(empty_database) == []


def test_billing_only_leaves_application_schema_untouched(empty_database: str) -> None:
    migrate.upgrade(empty_database, migrate.BILLING_HEAD)
    tables = _tables(empty_database)
    assert tables[None] == set()
    assert {"daily_usage", "meter_ledger", "webhook_inbox"} <= tables["billing"]


def test_the_ledger_keeps_room_on_its_pages_for_heap_only_claims(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    engine = make_engine(empty_database, pool_size=1)
    with engine.connect() as connection:
        options = connection.execute(
            text("SELECT reloptions FROM pg_class WHERE oid = 'billing.meter_ledger'::regclass")
        ).scalar_one()
    engine.dispose()
    assert options == [f"fillfactor={LEDGER_FILLFACTOR}"]
