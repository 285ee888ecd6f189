"""Alembic environment: both branches (`app` reference schema, `billing` pipeline schema).

The version table lives in the `billing` schema so that migrating the pipeline into an existing
application database adds nothing to the application's own schema.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from billing_pipeline.db.engine import make_engine
from billing_pipeline.db.schema import BILLING_SCHEMA, app_metadata, billing_metadata

config = context.config
target_metadata = [app_metadata, billing_metadata]


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "schema":
        return name in (None, BILLING_SCHEMA)
    return True


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "", pool_size=1)
    with engine.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {BILLING_SCHEMA}"))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=BILLING_SCHEMA,
            include_schemas=True,
            include_name=_include_name,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
