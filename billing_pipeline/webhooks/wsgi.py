"""The WSGI entry point for gunicorn: `billing_pipeline.webhooks.wsgi:app`, built from the
environment at import, so a misconfigured worker fails at boot rather than on a delivery."""

from __future__ import annotations

from flask import Flask

from billing_pipeline import config
from billing_pipeline.db.engine import render_url
from billing_pipeline.webhooks.app import DEFAULT_MAX_BODY_BYTES, create_app
from billing_pipeline.webhooks.verify import parse_secrets


def app_from_environment() -> Flask:
    """A receiver for `DATABASE_URL`, the comma-separated `STRIPE_WEBHOOK_SECRET` and, if set,
    `STRIPE_WEBHOOK_MAX_BODY_BYTES`.

    Production needs a real database URL: the embedded Postgres is for the demo and cannot be
    held open for a worker's lifetime from here.
    """
    url = config.env(config.DATABASE_URL)
    if url is None:
        raise RuntimeError(f"{config.DATABASE_URL} must be set to serve webhooks with gunicorn")
    secrets = parse_secrets(config.env(config.STRIPE_WEBHOOK_SECRET))
    if not secrets:
        raise RuntimeError(f"{config.STRIPE_WEBHOOK_SECRET} must be set to serve webhooks")
    max_body_bytes = config.env_positive_int(
        config.STRIPE_WEBHOOK_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES
    )
    return create_app(render_url(url), secrets, max_body_bytes=max_body_bytes)


app = app_from_environment()
