"""The Flask app: Stripe's HTTP surface in front of `EmulatorState`.

Request hooks do what Stripe does before and after any endpoint runs (authentication, rate
limiting, injected faults, `Idempotency-Key` replay, dropped connections); the views only decode
parameters and call the state, so each Billing Meter rule is written once in `state.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from stripe_emulator.errors import StripeAPIError, rate_limited
from stripe_emulator.faults import Faults
from stripe_emulator.forms import decode_pairs
from stripe_emulator.state import EmulatorState, SavedResponse, new_id
from stripe_emulator.webhooks import ThinEventDeliverer

_API_KEY = re.compile(r"sk_test_[0-9A-Za-z_]+")
_STREAM_PATH = "/v2/billing/meter_event_stream"
_MISSING_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)
_RATE_LIMIT = (
    "Request rate limit exceeded. Learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)
_CONCURRENCY = (
    "Too many concurrent requests for this customer and meter: Stripe allows one concurrent "
    "meter event call per customer per meter."
)
_KEPT_HEADERS = ("Stripe-Should-Retry",)


@dataclass
class Runtime:
    """Everything one emulator instance shares between its API and control routes."""

    state: EmulatorState
    faults: Faults
    deliverer: ThinEventDeliverer
    counts: Counter[str] = field(default_factory=Counter)
    counts_lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, key: str) -> None:
        with self.counts_lock:
            self.counts[key] += 1


def _masked(key: str) -> str:
    prefix = key[:8] if key.startswith(("sk_", "rk_", "pk_")) else ""
    return prefix + "*" * max(len(key) - len(prefix) - 4, 0) + key[-4:]


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _authenticate() -> str:
    key = _bearer()
    if key is None:
        raise StripeAPIError(401, _MISSING_KEY)
    if not _API_KEY.fullmatch(key):
        raise StripeAPIError(401, f"Invalid API Key provided: {_masked(key)}")
    return key


def _params() -> dict[str, Any]:
    if request.path.startswith("/v2/") and request.method == "POST":
        body = request.get_json(silent=True, force=True)
        return body if isinstance(body, dict) else {}
    source = request.form if request.method == "POST" else request.args
    return decode_pairs(source.items(multi=True))


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, indent=2), status=status, mimetype="application/json")


def create_app(runtime: Runtime) -> Flask:
    """Build the app for one emulator; state lives in `runtime`, so apps never share it."""
    from stripe_emulator.control_api import control_blueprint

    app = Flask("stripe_emulator")
    app.register_blueprint(control_blueprint(runtime))
    state, faults = runtime.state, runtime.faults

    @app.before_request
    def stripe_preamble() -> Response | None:
        if request.path.startswith("/_emulator"):
            return None
        g.request_id = new_id("req_", 14)
        # Hash the raw body before form parsing consumes it (the cached copy feeds the parser).
        g.fingerprint = hashlib.sha256(request.get_data(cache=True)).hexdigest()
        g.api_key = None if request.path == _STREAM_PATH else _authenticate()
        if not faults.allow_request() or faults.roll("error_429"):
            g.no_replay_save = True
            raise rate_limited(_RATE_LIMIT)
        if faults.roll("error_500"):
            g.no_replay_save = True
            raise StripeAPIError(
                500,
                "An unknown error occurred. Please try again or contact support.",
                error_type="api_error",
            )
        replay = _idempotent_replay()
        if replay is not None:
            return replay
        if request.endpoint != "create_meter_event":
            time.sleep(faults.latency_seconds())
        return None

    def _idempotency_scope() -> str | None:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            return None
        return f"{g.api_key or _bearer()}|{key}"

    def _idempotent_replay() -> Response | None:
        scope = _idempotency_scope()
        saved = state.saved_response(scope) if scope else None
        if saved is None:
            return None
        g.no_replay_save = True
        if (saved.method, saved.path, saved.fingerprint) != (
            request.method,
            request.path,
            g.fingerprint,
        ):
            key = request.headers["Idempotency-Key"]
            raise StripeAPIError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                error_type="idempotency_error",
            )
        response = Response(saved.body, status=saved.status, mimetype="application/json")
        response.headers.update(saved.headers)
        response.headers["Idempotent-Replayed"] = "true"
        return response

    @app.after_request
    def stripe_epilogue(response: Response) -> Response:
        if request.path.startswith("/_emulator"):
            return response
        scope = _idempotency_scope()
        cacheable = response.status_code < 500 and response.status_code not in (401, 429)
        if scope and cacheable and not g.get("no_replay_save"):
            state.save_response(
                scope,
                SavedResponse(
                    method=request.method,
                    path=request.path,
                    fingerprint=g.fingerprint,
                    status=response.status_code,
                    body=response.get_data(as_text=True),
                    headers={
                        h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers
                    },
                    saved_at=state.now(),
                ),
            )
        response.headers["Request-Id"] = g.get("request_id", "")
        endpoint = state.settings.webhook_endpoint
        for event in state.drain_notifications():
            if endpoint:
                runtime.deliverer.enqueue(endpoint, event)
        if faults.roll("drop"):
            _drop_connection()
            runtime.count("dropped")
        else:
            runtime.count(str(response.status_code))
        return response

    @app.errorhandler(StripeAPIError)
    def stripe_error(error: StripeAPIError) -> Response:
        response = _json(error.body(g.get("request_id")), error.status)
        response.headers.update(error.headers)
        return response

    @app.errorhandler(HTTPException)
    def unknown_route(error: HTTPException) -> Response:
        message = (
            f"Unrecognized request URL ({request.method}: {request.path}). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/."
        )
        return _json(StripeAPIError(404, message).body(), 404)

    _register_routes(app, runtime)
    return app


def _drop_connection() -> None:
    """Close the socket after the request was applied: the client cannot tell if it was."""
    sock = request.environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)


def _register_routes(app: Flask, runtime: Runtime) -> None:
    state, faults = runtime.state, runtime.faults

    @app.post("/v1/customers")
    def create_customer() -> Response:
        return _json(state.create_customer(_params()))

    @app.get("/v1/customers")
    def list_customers() -> Response:
        return _json(state.list_customers(_params()))

    @app.get("/v1/customers/<customer_id>")
    def retrieve_customer(customer_id: str) -> Response:
        return _json(state.get_customer(customer_id))

    @app.post("/v1/billing/meters")
    def create_meter() -> Response:
        return _json(state.create_meter(_params()))

    @app.get("/v1/billing/meters")
    def list_meters() -> Response:
        return _json(state.list_meters(_params()))

    @app.get("/v1/billing/meters/<meter_id>")
    def retrieve_meter(meter_id: str) -> Response:
        return _json(state.get_meter(meter_id))

    @app.post("/v1/billing/meters/<meter_id>")
    def update_meter(meter_id: str) -> Response:
        return _json(state.update_meter(meter_id, _params()))

    @app.post("/v1/billing/meters/<meter_id>/deactivate")
    def deactivate_meter(meter_id: str) -> Response:
        return _json(state.set_meter_active(meter_id, False))

    @app.post("/v1/billing/meters/<meter_id>/reactivate")
    def reactivate_meter(meter_id: str) -> Response:
        return _json(state.set_meter_active(meter_id, True))

    @app.get("/v1/billing/meters/<meter_id>/event_summaries")
    def list_event_summaries(meter_id: str) -> Response:
        return _json(state.event_summaries(meter_id, _params()))

    @app.post("/v1/billing/meter_events")
    def create_meter_event() -> Response:
        """Latency is applied while holding the customer+meter slot, so overlap is visible."""
        params = _params()
        meter = state.meter_for(str(params.get("event_name") or ""))
        payload = params.get("payload")
        customer = None
        if meter is not None and isinstance(payload, dict):
            customer = payload.get(meter["customer_mapping"]["event_payload_key"])
        if meter is None or not customer:
            time.sleep(faults.latency_seconds())
            return _json(state.create_meter_event(params, g.request_id))
        if not state.try_acquire_slot(str(customer), meter["id"]):
            g.no_replay_save = True
            raise rate_limited(_CONCURRENCY)
        try:
            time.sleep(faults.latency_seconds())
            return _json(state.create_meter_event(params, g.request_id))
        finally:
            state.release_slot(str(customer), meter["id"])

    @app.post("/v1/billing/meter_event_adjustments")
    def create_meter_event_adjustment() -> Response:
        return _json(state.cancel_meter_event(_params()))

    @app.post("/v2/billing/meter_event_session")
    def create_meter_event_session() -> Response:
        return _json(state.create_session())

    @app.post(_STREAM_PATH)
    def create_meter_event_stream() -> Response:
        state.check_session(_bearer())
        state.stream_meter_events(_params(), g.request_id)
        return _json({})

    @app.get("/v2/core/events/<event_id>")
    def retrieve_v2_event(event_id: str) -> Response:
        return _json(state.get_v2_event(event_id))
