"""Settings come only from the environment, under these names.

Users and the README rely on the names; keeping them in one place keeps the docs honest.
Secrets are read where they are used and never logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, cast

MeterEventApi = Literal["v1", "v2"]
METER_EVENT_APIS: tuple[MeterEventApi, ...] = ("v1", "v2")

DATABASE_URL = "DATABASE_URL"
DAGSTER_HOME = "DAGSTER_HOME"
DAGSTER_PG_URL = "DAGSTER_PG_URL"
STRIPE_SECRET_KEY = "STRIPE_SECRET_KEY"
STRIPE_API_BASE = "STRIPE_API_BASE"
STRIPE_METER_EVENT_API = "STRIPE_METER_EVENT_API"
STRIPE_WEBHOOK_SECRET = "STRIPE_WEBHOOK_SECRET"
STRIPE_WEBHOOK_MAX_BODY_BYTES = "STRIPE_WEBHOOK_MAX_BODY_BYTES"
DATA_DIR = "BILLING_PIPELINE_DATA_DIR"


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


def meter_event_api() -> MeterEventApi | None:
    """The deployment's choice of Stripe meter event API (`STRIPE_METER_EVENT_API`), if set.

    A bad value is an error naming the variable and the accepted values, so a misconfigured
    code location fails to load instead of silently sending through the other API.
    """
    value = env(STRIPE_METER_EVENT_API)
    if value is None:
        return None
    if value not in METER_EVENT_APIS:
        raise ValueError(
            f"{STRIPE_METER_EVENT_API} must be one of {', '.join(METER_EVENT_APIS)}, not {value!r}"
        )
    return cast(MeterEventApi, value)
