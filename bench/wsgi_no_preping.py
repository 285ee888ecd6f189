"""The receiver's WSGI app with one change, for `bench.receiver` to measure a proposed fix.

The production app's engine pings every pooled connection on checkout (`pool_pre_ping`), one
extra PostgreSQL round trip per delivery next to the INSERT and the COMMIT. The receiver does
not need it: a connection that died fails the INSERT, SQLAlchemy invalidates the pool on that
disconnect error, the delivery is answered 503 and Stripe redelivers it. Nothing else differs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine

from billing_pipeline.db.engine import psycopg2_url
from billing_pipeline.webhooks import app as receiver_app
from billing_pipeline.webhooks import wsgi


def _engine_without_preping(url: Any, **_: Any) -> Engine:
    return create_engine(
        psycopg2_url(url),
        pool_size=5,
        max_overflow=10,
        pool_pre_ping=False,
        connect_args={"options": "-c timezone=UTC", "connect_timeout": 10},
    )


receiver_app.make_engine = _engine_without_preping
app = wsgi.app_from_environment()
