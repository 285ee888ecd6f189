"""`billing-pipeline webhooks …`: serve the receiver for development, recover missed events,
requeue a dead letter."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
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
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help=f"largest body accepted (default: ${config.STRIPE_WEBHOOK_MAX_BODY_BYTES} or 1 MiB)",
    )
    serve.set_defaults(handler=_serve)

    recover = commands.add_parser(
        "recover",
        help="List Stripe's events since the last confirmed point (or --since) and store the "
        "ones the inbox lacks; the inbox sensor then applies them. Needs STRIPE_SECRET_KEY.",
    )
    recover.add_argument(
        "--since",
        type=_utc_datetime,
        help="ISO 8601 date or time, UTC unless it has an offset (2026-11-28, "
        "2026-11-28T09:00:00Z); Stripe keeps 30 days",
    )
    recover.set_defaults(handler=_recover)

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


def _utc_datetime(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {value!r}") from error
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from billing_pipeline.db.database import database_url
    from billing_pipeline.webhooks.app import DEFAULT_MAX_BODY_BYTES, create_app
    from billing_pipeline.webhooks.verify import parse_secrets

    secrets = parse_secrets(config.env(config.STRIPE_WEBHOOK_SECRET))
    if not secrets:
        print(
            f"refusing to serve: set {config.STRIPE_WEBHOOK_SECRET} to the endpoint's signing "
            "secret (whsec_…; several comma-separated during a rotation)",
            file=sys.stderr,
        )
        return 2
    max_body_bytes = args.max_body_bytes or config.env_positive_int(
        config.STRIPE_WEBHOOK_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES
    )
    with database_url() as url:
        app = create_app(url, secrets, max_body_bytes=max_body_bytes)
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


def _recover(args: argparse.Namespace) -> int:
    from billing_pipeline.db.database import database_url
    from billing_pipeline.db.engine import make_engine
    from billing_pipeline.resources import stripe_for_commands
    from billing_pipeline.webhooks.recovery import recover_missed_events

    client = stripe_for_commands().client()
    if client is None:
        print(f"error: {config.STRIPE_SECRET_KEY} is not set", file=sys.stderr)
        return 2
    with database_url() as url:
        engine = make_engine(url, pool_size=1)
        result = recover_missed_events(engine, client, since=args.since)
        engine.dispose()
    since = "all of Stripe's 30 days" if result.listed_since is None else result.listed_since
    print(f"listed {result.listed} Stripe events since {since}")
    print(f"recovered into the inbox: {len(result.recovered)} {' '.join(result.recovered)}")
    if result.refused:
        print(f"refused (not storable): {' '.join(result.refused)}", file=sys.stderr)
    if result.retention_gap:
        print("warning: that is beyond Stripe's 30-day retention; older events are lost")
    print(f"confirmed until: {result.confirmed_until or 'nothing listed yet'}")
    return 1 if result.refused else 0


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
    print(f"requeued {args.event_id}; the sensor's next retry run applies it")
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
