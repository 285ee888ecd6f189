"""Settings come only from the environment, under these names.

Users and the README rely on the names; keeping them in one place keeps the docs honest.
Secrets are read where they are used and never logged.
"""

from __future__ import annotations

import os
from pathlib import Path

DATABASE_URL = "DATABASE_URL"
DAGSTER_HOME = "DAGSTER_HOME"
DAGSTER_PG_URL = "DAGSTER_PG_URL"
STRIPE_SECRET_KEY = "STRIPE_SECRET_KEY"
STRIPE_API_BASE = "STRIPE_API_BASE"
STRIPE_WEBHOOK_SECRET = "STRIPE_WEBHOOK_SECRET"
STRIPE_WEBHOOK_MAX_BODY_BYTES = "STRIPE_WEBHOOK_MAX_BODY_BYTES"
DATA_DIR = "BILLING_PIPELINE_DATA_DIR"
# Where alerts go (billing_pipeline/alerts/): any of them, or none (said once at start-up).
ALERTS_SLACK_WEBHOOK_URL = "BILLING_ALERTS_SLACK_WEBHOOK_URL"
ALERTS_WEBHOOK_URL = "BILLING_ALERTS_WEBHOOK_URL"
ALERTS_SMTP_URL = "BILLING_ALERTS_SMTP_URL"
ALERTS_EMAIL_TO = "BILLING_ALERTS_EMAIL_TO"
ALERTS_EMAIL_FROM = "BILLING_ALERTS_EMAIL_FROM"
# The Dagster UI as the people receiving alerts reach it: each alert links to its run there.
DAGSTER_UI_URL = "DAGSTER_UI_URL"


def data_dir() -> Path:
    """Project-local, git-ignored folder for the embedded Postgres cluster and demo state."""
    return Path(os.environ.get(DATA_DIR, ".data")).resolve()


def env(name: str) -> str | None:
    """An environment variable; an empty string counts as unset, as shells often export them."""
    value = os.environ.get(name, "").strip()
    return value or None


def env_positive_int(name: str, default: int) -> int:
    """A positive whole number from the environment, or `default` when unset.

    A bad value is an error naming the variable, so a misconfigured process fails at start.
    """
    value = env(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"{name} must be a positive whole number, not {value!r}")
    return int(value)
