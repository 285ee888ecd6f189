"""Dagster resources for Postgres and Stripe, configured from the environment.

Values come in through `dg.EnvVar`, so the UI shows the variable's name, never the secret.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import dagster as dg
from sqlalchemy import Engine

from billing_pipeline import config
from billing_pipeline.db.engine import make_engine
from billing_pipeline.stripe_client import RetryRule, StripeBilling


@cache
def _engine_for(url: str, pool_size: int) -> Engine:
    # One pool per process and URL: Dagster builds resources per run and per step, and a pool
    # per build would leak connections over a long backfill.
    return make_engine(url, pool_size=pool_size, max_overflow=pool_size)


class PostgresResource(dg.ConfigurableResource):
    """The database holding the application's tables and the pipeline's `billing` schema.

    `pool_size` connections are kept, and as many again may be opened under load. The Stripe
    sender claims rows by lease and holds no connection across its calls, so its concurrency
    does not depend on the pool.
    """

    database_url: str
    pool_size: int = 10

    def engine(self) -> Engine:
        return _engine_for(self.database_url, self.pool_size)


class StripeResource(dg.ConfigurableResource):
    """Stripe Billing, through the official SDK.

    Without a secret key nothing is billed: the reporting step (`stripe/meter_events`) fails
    before planning, with nothing written to the ledger and nothing sent (what a revision
    carries depends on the Stripe meter's kind, which only Stripe knows), and the next run with
    a key plans and sends every day still inside Stripe's 35-day window. `stripe_webhook_inbox`
    fails too (Stripe's event list cannot be read), `stripe_subscriptions` applies the events it
    can apply without Stripe and retries the others, and `billing/status` shows "not reconciled".

    `meter_event_api` picks how meter events are sent: "v1" (`POST /v1/billing/meter_events`,
    one event a call, validated synchronously) or "v2" (the meter event stream, up to 100
    events a request, validated asynchronously with errors reported as meter error reports).
    `concurrency` is the number of calls (v1) or stream requests (v2) in flight.
    `lease_seconds` is how long a sender's claim on ledger rows lasts: after a crash, the rows
    go out again once it has passed.
    `retry_*` bound one Stripe call (`stripe_client.RetryRule`); `breaker_failures` is how many
    calls in a row may fail that way before a run stops sending and leaves the rest for its
    retry (`sender.Breaker`).

    Run config for this resource replaces the whole value bound in `definitions.py`, not just
    the fields it names (Dagster keeps the bound values as one default for the resource's config
    as a whole): `{"resources": {"stripe": {"config": {"meter_event_api": "v2"}}}}` would
    otherwise leave the key unset. So the settings that come from the environment fall back to
    it whenever they are unset: `STRIPE_SECRET_KEY`, `STRIPE_API_BASE`, and, for
    `meter_event_api="deployment"` (the default), `STRIPE_METER_EVENT_API` ("v1" when unset).
    """

    secret_key: str | None = None
    api_base: str | None = None
    meter_event_api: Literal["deployment", "v1", "v2"] = "deployment"
    concurrency: int = 8
    lease_seconds: int = 600
    retry_attempts: int = 4
    retry_base_seconds: float = 0.5
    retry_deadline_seconds: float = 20.0
    breaker_failures: int = 20

    def event_api(self) -> config.MeterEventApi:
        """The API this run sends meter events through: its config, else the deployment's."""
        if self.meter_event_api != "deployment":
            return self.meter_event_api
        return config.meter_event_api() or "v1"

    def client(self) -> StripeBilling | None:
        secret_key = self.secret_key or config.env(config.STRIPE_SECRET_KEY)
        if not secret_key:
            return None
        return StripeBilling(
            secret_key,
            self.api_base or config.env(config.STRIPE_API_BASE),
            retry=RetryRule(
                attempts=self.retry_attempts,
                base_seconds=self.retry_base_seconds,
                deadline_seconds=self.retry_deadline_seconds,
            ),
        )


def stripe_for_commands() -> StripeResource:
    """The resource the code location binds, for a command: the environment's key and base, or
    the running demo's emulator (`config.setting`)."""
    return StripeResource(
        secret_key=config.setting(config.STRIPE_SECRET_KEY),
        api_base=config.setting(config.STRIPE_API_BASE),
    )


def stripe_from_environment() -> StripeResource:
    """Bind each setting to its environment variable, only if set: all are optional.

    The API is bound as a value (validated here, so a bad `STRIPE_METER_EVENT_API` stops the
    code location from loading) because `dg.EnvVar` carries only strings.
    """
    return StripeResource(
        meter_event_api=config.meter_event_api() or "deployment",
        secret_key=dg.EnvVar(config.STRIPE_SECRET_KEY)
        if config.env(config.STRIPE_SECRET_KEY)
        else None,
        api_base=dg.EnvVar(config.STRIPE_API_BASE) if config.env(config.STRIPE_API_BASE) else None,
    )
