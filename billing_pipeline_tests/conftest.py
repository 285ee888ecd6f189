"""Fixtures for a real PostgreSQL: the server in `DATABASE_URL`, or an embedded one.

`.ci/run` runs the suite both ways. Every session migrates fresh databases of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import Engine

from billing_pipeline import config
from billing_pipeline.db import migrate
from billing_pipeline.db.embedded import EmbeddedPostgres
from billing_pipeline.db.engine import make_engine, render_url
from billing_pipeline_tests.support.databases import create_database, drop_database, truncate_all


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: `DATABASE_URL` when given, otherwise a private embedded cluster."""
    if url := config.env(config.DATABASE_URL):
        yield render_url(url)
        return
    pgdata: Path = tmp_path_factory.mktemp("embedded") / "pgdata"
    with EmbeddedPostgres(pgdata, delete_on_stop=True) as server:
        yield server.url


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A migrated database for this test session."""
    url = create_database(postgres_server_url, "billing_test")
    migrate.upgrade(url)
    yield url
    drop_database(postgres_server_url, url)


@pytest.fixture(scope="session")
def session_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=10, max_overflow=20)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(session_engine: Engine) -> Engine:
    """The session database, emptied before the test so every test starts from nothing."""
    truncate_all(session_engine)
    return session_engine


@pytest.fixture(scope="session")
def dagster_storage_url(postgres_server_url: str) -> Iterator[str]:
    """A database for Dagster's own run, event and schedule storage (dagster-postgres)."""
    url = create_database(postgres_server_url, "dagster_test")
    yield url
    drop_database(postgres_server_url, url)


@pytest.fixture(scope="session")
def dagster_instance(dagster_storage_url: str) -> Iterator[dg.DagsterInstance]:
    """A real Dagster instance on Postgres, as production runs it."""
    with dg.instance_for_test(
        overrides={"storage": {"postgres": {"postgres_url": dagster_storage_url}}}
    ) as instance:
        yield instance


pytest_plugins = [
    "billing_pipeline_tests.support.stripe",
    "billing_pipeline_tests.support.meter_kinds",
]
