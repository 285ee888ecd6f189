"""Helpers shared by the test package: throwaway databases on a real PostgreSQL server."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from billing_pipeline.db.engine import make_engine, render_url
from billing_pipeline.db.schema import billing_metadata

APP_TABLES = ("temperature_readings", "sensors", "subscriptions", "organizations")
# Every table of the pipeline's schema, so a new one is emptied between tests too.
BILLING_TABLES = tuple(f"{t.schema}.{t.name}" for t in billing_metadata.sorted_tables)


def create_database(server_url: str, prefix: str) -> str:
    """Create an empty database on the server and return its URL.

    Each test session gets its own databases, so several sessions (or developers) can share one
    server without seeing each other's rows.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = make_engine(server_url, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return render_url(make_url(render_url(server_url)).set(database=name))


def drop_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    admin = make_engine(server_url, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def truncate_all(engine: Engine) -> None:
    with engine.begin() as connection:
        tables = ", ".join((*APP_TABLES, *BILLING_TABLES))
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
