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

    subscriptions = subparsers.add_parser(
        "subscriptions", help="Look at the `subscriptions` table that webhooks keep up to date."
    )
    actions = subscriptions.add_subparsers(
        dest="subscriptions_command", required=True, metavar="ACTION"
    )
    listing = actions.add_parser(
        "list",
        help="Print subscriptions as a table (read-only): status, payment, period, Stripe ids.",
    )
    listing.add_argument("--organization-id", type=int, help="Only this organization's.")
    listing.set_defaults(handler=_list_subscriptions)


def _serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

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
        # Werkzeug's server without `app.run`'s banner: its "development server" WARNING would be
        # noise at every `make demo`; the help and this line already say what it is for.
        server = make_server(args.host, args.port, app, threaded=True)
        print(
            f"webhook receiver on http://{args.host}:{server.server_port} "
            "(Flask's development server; serve billing_pipeline.webhooks.wsgi:app with gunicorn "
            "in production)",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
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


# (column, heading): what an operator checks after a webhook, in the order they read it.
SUBSCRIPTION_COLUMNS = (
    ("id", "id"),
    ("organization_id", "org"),
    ("status", "status"),
    ("payment_status", "payment"),
    ("cancel_at_period_end", "cancels at period end"),
    ("current_period_end", "period ends"),
    ("stripe_customer_id", "customer"),
    ("stripe_subscription_id", "subscription"),
    ("started_at", "started"),
    ("updated_at", "updated"),
)


def _list_subscriptions(args: argparse.Namespace) -> int:
    """Works on the embedded PostgreSQL too (joining the demo's cluster), where psql is absent."""
    from sqlalchemy import text

    from billing_pipeline.db.database import database_url
    from billing_pipeline.db.engine import make_engine
    from billing_pipeline.text_tables import text_table

    query = text(
        f"SELECT {', '.join(column for column, _ in SUBSCRIPTION_COLUMNS)} FROM subscriptions "
        "WHERE CAST(:organization AS bigint) IS NULL OR organization_id = :organization "
        "ORDER BY organization_id, id"
    )
    with database_url() as url:
        engine = make_engine(url, pool_size=1)
        try:
            with engine.connect() as connection:
                rows = connection.execute(query, {"organization": args.organization_id}).all()
        finally:
            engine.dispose()
    headings = [heading for _, heading in SUBSCRIPTION_COLUMNS]
    print(text_table(headings, rows, numeric=("id", "org")))
    return 0
