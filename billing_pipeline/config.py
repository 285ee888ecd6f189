"""Settings come only from the environment, under these names.

Users and the README rely on the names; keeping them in one place keeps the docs honest.
Secrets are read where they are used and never logged.
"""

from __future__ import annotations

import json
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
PARTITIONS_START = "BILLING_PARTITIONS_START"
# Written by `billing-pipeline dev` while it runs: the settings it gave its children.
DEV_SETTINGS_FILE = Path("dev-settings.json")  # a file name, not a setting: hence not a str
# Where alerts go (billing_pipeline/alerts/): any of them, or none (said once at start-up).
ALERTS_SLACK_WEBHOOK_URL = "BILLING_ALERTS_SLACK_WEBHOOK_URL"
ALERTS_WEBHOOK_URL = "BILLING_ALERTS_WEBHOOK_URL"
ALERTS_SMTP_URL = "BILLING_ALERTS_SMTP_URL"
ALERTS_EMAIL_TO = "BILLING_ALERTS_EMAIL_TO"
ALERTS_EMAIL_FROM = "BILLING_ALERTS_EMAIL_FROM"
# The Dagster UI as the people receiving alerts reach it: each alert links to its run there.
DAGSTER_UI_URL = "DAGSTER_UI_URL"
# Reconciliation's bounds (reconciliation_coverage.py): Stripe summary reads per UTC day, the days
# within which every (meter, customer) is compared, and the pace of its reads.
RECONCILIATION_DAILY_CALLS = "STRIPE_RECONCILIATION_DAILY_CALLS"
RECONCILIATION_ROTATION_DAYS = "STRIPE_RECONCILIATION_ROTATION_DAYS"
RECONCILIATION_READS_PER_SECOND = "STRIPE_RECONCILIATION_READS_PER_SECOND"


def data_dir() -> Path:
    """Project-local, git-ignored folder for the embedded Postgres cluster and demo state."""
    return Path(os.environ.get(DATA_DIR, ".data")).resolve()


def env(name: str) -> str | None:
    """An environment variable; an empty string counts as unset, as shells often export them."""
    value = os.environ.get(name, "").strip()
    return value or None


def setting(name: str) -> str | None:
    """A setting for a command typed in another terminal: the environment's, else the one a
    running `billing-pipeline dev` gave its own processes.

    The demo's database is found through the data directory (its embedded server); its Stripe
    emulator and Dagster instance are found there too, in the file the supervisor writes while
    it runs and removes when it stops, so `status --stripe` works without typing them in front.
    """
    if value := env(name):
        return value
    try:
        recorded = json.loads((data_dir() / DEV_SETTINGS_FILE).read_text())
    except FileNotFoundError:
        return None
    value = recorded.get(name)
    return str(value) if value else None


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
