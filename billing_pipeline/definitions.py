"""The code location: every asset, check, job, schedule, sensor and resource, assembled once."""

from __future__ import annotations

import dagster as dg

from billing_pipeline import config
from billing_pipeline.resources import PostgresResource

defs = dg.Definitions(
    resources={"postgres": PostgresResource(database_url=dg.EnvVar(config.DATABASE_URL))},
)
