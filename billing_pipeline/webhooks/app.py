"""The Flask receiver: verify the raw body, commit it to the inbox, answer.

It does nothing else, so it stays fast (Stripe times deliveries out) and its answers mean exactly
one thing: 2xx once the event is committed, 4xx for a request that can never succeed (Stripe will
retry, but a retry cannot fix it), 503 when storing failed for a reason a retry can fix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import DataError, SQLAlchemyError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from billing_pipeline.db.engine import make_engine
from billing_pipeline.webhooks import inbox
from billing_pipeline.webhooks.events import (
    InboxEvent,
    MalformedEventError,
    parse_snapshot_event,
    parse_thin_event,
)
from billing_pipeline.webhooks.verify import (
    DEFAULT_TOLERANCE_SECONDS,
    InvalidSignatureError,
    verify_signature,
    verify_thin_event,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1_048_576
RETRY_AFTER_SECONDS = "30"
READ_CHUNK_BYTES = 64 * 1024


def _answer(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"status": status, "message": message}), status


def _read_body(max_bytes: int) -> bytes | None:
    """The raw body, or None as soon as it is known to exceed `max_bytes`.

    A declared length is judged before reading anything; a chunked body is read in pieces and
    abandoned one piece past the limit, so an oversized request never sits whole in memory.
    (Flask's MAX_CONTENT_LENGTH truncates a chunked body at the limit instead, which would turn
    an oversized event into a confusing signature failure.)
    """
    if request.content_length is not None and request.content_length > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := request.stream.read(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    database_url: str,
    webhook_secrets: Sequence[str],
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Flask:
    """Build the receiver for one database and a set of endpoint secrets (several for rotation).

    Refuses to build without a secret: an endpoint that cannot verify must not exist at all,
    rather than one that accepts or rejects everything.
    """
    secrets = tuple(secret.strip() for secret in webhook_secrets if secret.strip())
    if not secrets:
        raise ValueError("a Stripe webhook secret is required (STRIPE_WEBHOOK_SECRET)")
    if max_body_bytes <= 0:
        raise ValueError("max_body_bytes must be positive")

    app = Flask(__name__)
    engine = make_engine(database_url)

    @app.errorhandler(HTTPException)
    def routing_answer(error: HTTPException) -> tuple[Response, int]:
        """404 (another path) and 405 (`GET` and other methods, with `Allow`) in the same JSON
        shape as every other answer; Stripe only ever POSTs."""
        response, status = _answer(error.code or 500, error.name.lower())
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response, status

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        """Liveness only: a database outage must not take the receiver out of rotation, since
        answering 503 is how it tells Stripe to retry."""
        return _answer(200, "ok")

    def store(event: InboxEvent) -> tuple[Response, int]:
        """Commit a verified event; the answer Stripe gets depends only on the commit."""
        try:
            inserted = inbox.store_event(engine, event)
        except DataError:
            # Postgres refused the values themselves (e.g. a \u0000 escape jsonb cannot hold):
            # no retry can change that.
            # Logged without the exception text: it would echo the payload parameter.
            logger.error("stripe event %s could not be stored as jsonb", event.event_id)
            return _answer(400, "event not storable")
        except SQLAlchemyError as error:
            logger.error(
                "stripe event %s not stored, asking Stripe to retry: %s",
                event.event_id,
                type(error).__name__,
            )
            response, status = _answer(503, "inbox unavailable, retry later")
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
            return response, status
        logger.info(
            "stripe event %s (%s) %s",
            event.event_id,
            event.event_type,
            "stored" if inserted else "already stored",
        )
        return _answer(200, "stored" if inserted else "duplicate")

    @app.post("/webhooks/stripe")
    def receive() -> tuple[Response, int]:
        """Snapshot events (`object: "event"`), verified with the signature scheme alone."""
        raw_body = _read_body(max_body_bytes)
        if raw_body is None:
            return _answer(413, "body too large")
        try:
            body = verify_signature(
                raw_body,
                request.headers.get("Stripe-Signature"),
                secrets,
                DEFAULT_TOLERANCE_SECONDS,
            )
        except InvalidSignatureError as error:
            logger.warning("stripe webhook refused: %s", error)
            return _answer(400, "invalid signature")
        try:
            event = parse_snapshot_event(body)
        except MalformedEventError as error:
            logger.warning("signed stripe webhook refused as malformed: %s", error)
            return _answer(400, "malformed event")
        return store(event)

    @app.post("/webhooks/stripe/thin")
    def receive_thin() -> tuple[Response, int]:
        """Thin events (`object: "v2.core.event"`) from a Stripe event destination.

        A separate URL because Stripe delivers thin events through their own event destination
        (with its own signing secret) and the SDK parses them with its own parser; only the
        notification is stored, and the processing job fetches the full event from Stripe.
        """
        raw_body = _read_body(max_body_bytes)
        if raw_body is None:
            return _answer(413, "body too large")
        try:
            body, notification = verify_thin_event(
                raw_body,
                request.headers.get("Stripe-Signature"),
                secrets,
                DEFAULT_TOLERANCE_SECONDS,
            )
            event = parse_thin_event(body, notification)
        except InvalidSignatureError as error:
            logger.warning("stripe thin event refused: %s", error)
            return _answer(400, "invalid signature")
        except MalformedEventError as error:
            logger.warning("signed stripe thin event refused as malformed: %s", error)
            return _answer(400, "malformed event")
        return store(event)

    return app
