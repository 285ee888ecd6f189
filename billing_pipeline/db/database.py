"""Which Postgres the project talks to: `DATABASE_URL` if set, otherwise the embedded one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from billing_pipeline import config
from billing_pipeline.db.embedded import EmbeddedPostgres
from billing_pipeline.db.engine import render_url


def embedded_pgdata() -> EmbeddedPostgres:
    return EmbeddedPostgres(config.data_dir() / "pgdata")


@contextmanager
def database_url() -> Iterator[str]:
    """Yield a usable URL for as long as the caller needs the database.

    With `DATABASE_URL` set nothing is started. Without it the embedded cluster is started (or
    joined, if the demo already runs it) and let go of on exit.
    """
    if url := config.env(config.DATABASE_URL):
        yield render_url(url)
        return
    with embedded_pgdata() as server:
        yield server.url
