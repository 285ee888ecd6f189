"""The Flask app: Stripe's HTTP surface in front of `EmulatorState`.

Request hooks do what Stripe does before and after any endpoint runs (authentication, rate
limiting, injected faults, `Idempotency-Key` replay, dropped connections); the views in
`routes.py` only decode parameters and call the state, so each Billing Meter rule is written
once, in the resource modules.
"""

from __future__ import annotations

import hashlib
import json
import socket

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from stripe_emulator.control_api import control_blueprint
from stripe_emulator.errors import StripeAPIError, rate_limited
from stripe_emulator.ids import new_id
from stripe_emulator.replay import replayed, save_for_replay
from stripe_emulator.request_rules import check_request
from stripe_emulator.response_shapes import check_api_version, response_violations
from stripe_emulator.routes import STREAM_PATH, register_routes
from stripe_emulator.runtime import Runtime
from stripe_emulator.wire import authenticate, is_json_body, json_response, params

_RATE_LIMIT = (
    "Request rate limit exceeded. Learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)


def create_app(runtime: Runtime) -> Flask:
    """Build the app for one emulator; state lives in `runtime`, so apps never share it."""
    app = Flask("stripe_emulator")
    app.register_blueprint(control_blueprint(runtime))
    state, faults = runtime.state, runtime.faults

    @app.before_request
    def stripe_preamble() -> Response | None:
        if request.path.startswith("/_emulator"):
            return None
        g.request_id = new_id("req_", 14)
        # Read the raw body before form parsing consumes it (the cached copy feeds the parser);
        # its hash only matters to a request with an Idempotency-Key (see replay.py).
        body = request.get_data(cache=True)
        idempotent = "Idempotency-Key" in request.headers
        g.fingerprint = hashlib.sha256(body).hexdigest() if idempotent else None
        g.api_key = None if request.path == STREAM_PATH else authenticate()
        if not faults.allow_request() or faults.roll("error_429"):
            g.no_replay_save = True
            raise rate_limited(_RATE_LIMIT)
        if faults.roll("error_500"):
            g.no_replay_save = True
            raise StripeAPIError(
                500,
                "An unknown error occurred. Please try again or contact support.",
                error_type="api_error",
                headers=faults.should_retry_header(),
            )
        # What fell due on the emulator clock happens before this request is applied: a meter
        # event arriving after an invoice's finalization time is not on that invoice.
        state.billing.run_due()
        replay = replayed(state.idempotency)
        if replay is not None:
            g.replayed = True
            return replay
        check_api_version(request.headers.get("Stripe-Version"))
        check_request(request.endpoint, params(), form=not is_json_body())
        if request.endpoint != "create_meter_event":
            faults.delay()
        return None

    @app.after_request
    def stripe_epilogue(response: Response) -> Response:
        if request.path.startswith("/_emulator"):
            return response
        if runtime.check_responses and request.endpoint and not g.get("replayed"):
            response = _checked(runtime, request.endpoint, response)
        save_for_replay(state.idempotency, response, state.now)
        response.headers["Request-Id"] = g.get("request_id", "")
        runtime.hand_over_events()
        if faults.roll("drop"):
            _drop_connection()
            runtime.count("dropped", request.endpoint)
        else:
            runtime.count(str(response.status_code), request.endpoint)
        return response

    @app.errorhandler(StripeAPIError)
    def stripe_error(error: StripeAPIError) -> Response:
        response = json_response(error.body(g.get("request_id")), error.status)
        response.headers.update(error.headers)
        return response

    @app.errorhandler(HTTPException)
    def unknown_route(error: HTTPException) -> Response:
        message = (
            f"Unrecognized request URL ({request.method}: {request.path}). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/."
        )
        return json_response(StripeAPIError(404, message).body(), 404)

    register_routes(app, runtime)
    return app


def _checked(runtime: Runtime, endpoint: str, response: Response) -> Response:
    """Contract mode: a 2xx answer in a shape Stripe never gives becomes a loud 500."""
    if not 200 <= response.status_code < 300 or response.mimetype != "application/json":
        return response
    violations = response_violations(json.loads(response.get_data()))
    runtime.record_contract(endpoint, violations)
    if not violations:
        return response
    message = "Emulator response departs from Stripe's published shape: " + "; ".join(violations)
    error = StripeAPIError(500, message, error_type="api_error")
    return json_response(error.body(g.get("request_id")), 500)


def _drop_connection() -> None:
    """Close the socket after the request was applied: the client cannot tell if it was."""
    sock = request.environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)
