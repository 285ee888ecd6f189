"""Dagster resources for Postgres; configured from the environment so secrets stay out of the UI."""

from __future__ import annotations

from functools import cache

import dagster as dg
from sqlalchemy import Engine

from billing_pipeline.db.engine import make_engine


@cache
def _engine_for(url: str) -> Engine:
    # One pool per process and URL: Dagster builds resources per run and per step, and a pool
    # per build would leak connections over a long backfill.
    return make_engine(url)


class PostgresResource(dg.ConfigurableResource):  # type: ignore[misc]
    """The database holding the application's tables and the pipeline's `billing` schema."""

    database_url: str

    def engine(self) -> Engine:
        return _engine_for(self.database_url)
