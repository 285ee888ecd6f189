"""Run Alembic migrations from code, so the CLI, the demo and the tests share one path.

Two branches: `app` creates the application's reference tables (demo and tests only) and
`billing` creates the pipeline's own schema. Against an existing application database only
`billing@head` is applied.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

from billing_pipeline.db.engine import render_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
ALL_HEADS = "heads"
BILLING_HEAD = "billing@head"


def alembic_config(url: str | URL) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates `%`, which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", render_url(url).replace("%", "%%"))
    return config


def upgrade(url: str | URL, target: str = ALL_HEADS) -> None:
    command.upgrade(alembic_config(url), target)


def downgrade(url: str | URL, target: str = "base") -> None:
    command.downgrade(alembic_config(url), target)
