"""One way to turn a URL into an SQLAlchemy engine.

SQLAlchemy 2.1 maps a bare `postgresql://` URL to psycopg 3, while dagster-postgres only works
with psycopg2; normalising every URL to `postgresql+psycopg2://` keeps the application, the
migrations and Dagster's storage on one driver.
"""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

PSYCOPG2 = "postgresql+psycopg2"


def psycopg2_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        return parsed.set(drivername=PSYCOPG2)
    raise ValueError(f"expected a PostgreSQL URL, got driver {parsed.drivername!r}")


def render_url(url: str | URL) -> str:
    """The URL as a string with its password kept, for handing to child processes."""
    return psycopg2_url(url).render_as_string(hide_password=False)


def make_engine(url: str | URL, *, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    return create_engine(
        psycopg2_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        connect_args={"options": "-c timezone=UTC", "connect_timeout": 10},
    )
