"""`billing-pipeline webhooks …`: serve the receiver for development, requeue a dead letter."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from billing_pipeline import config


def register(subparsers: Any) -> None:
    webhooks = subparsers.add_parser("webhooks", help="Receive and manage Stripe webhooks.")
    commands = webhooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")

    serve = commands.add_parser(
        "serve",
        help="Serve POST /webhooks/stripe with Flask's server (development; use gunicorn in "
        "production, see billing_pipeline/webhooks/README.md).",
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--max-body-bytes", type=int, default=1_048_576)
    serve.set_defaults(handler=_serve)

    requeue = commands.add_parser(
        "requeue",
        help="Give a failed or dead-lettered event fresh attempts once its cause is fixed.",
    )
    requeue.add_argument("event_id", help="The Stripe event id, e.g. evt_1Q…")
    requeue.set_defaults(handler=_requeue)


def _serve(args: argparse.Namespace) -> int:
    from billing_pipeline.db.database import database_url
    from billing_pipeline.webhooks.app import create_app
    from billing_pipeline.webhooks.verify import parse_secrets

    secrets = parse_secrets(config.env(config.STRIPE_WEBHOOK_SECRET))
    if not secrets:
        print(
            f"refusing to serve: set {config.STRIPE_WEBHOOK_SECRET} to the endpoint's signing "
            "secret (whsec_…; several comma-separated during a rotation)",
            file=sys.stderr,
        )
        return 2
    with database_url() as url:
        app = create_app(url, secrets, max_body_bytes=args.max_body_bytes)
        app.run(host=args.host, port=args.port, threaded=True)
    return 0


def _requeue(args: argparse.Namespace) -> int:
    from billing_pipeline.db.database import database_url
    from billing_pipeline.db.engine import make_engine
    from billing_pipeline.webhooks.inbox import requeue

    with database_url() as url:
        engine = make_engine(url, pool_size=1)
        found = requeue(engine, args.event_id)
        engine.dispose()
    if not found:
        print(f"no failed or dead-lettered event {args.event_id}", file=sys.stderr)
        return 1
    print(f"requeued {args.event_id}; the sensor's next retry sweep applies it")
    return 0
