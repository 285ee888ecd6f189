"""The `/_emulator/…` control plane: what a test or the demo needs that Stripe has no API for.

It is HTTP (not Python calls) so an out-of-process demo or test drives the emulator exactly as
an in-process one does; `control.py` wraps it for Python callers.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from stripe_emulator.errors import StripeAPIError
from stripe_emulator.faults import FaultConfig
from stripe_emulator.runtime import Runtime


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True, force=True)
    return body if isinstance(body, dict) else {}


def control_blueprint(runtime: Runtime) -> Blueprint:
    state, faults = runtime.state, runtime.faults
    bp = Blueprint("emulator_control", __name__, url_prefix="/_emulator")

    @bp.after_request
    def deliver_what_billing_produced(response: Response) -> Response:
        """Moving the clock can end periods: their events are delivered like a request's."""
        runtime.hand_over_events()
        return response

    @bp.errorhandler(ValueError)
    @bp.errorhandler(TypeError)
    @bp.errorhandler(StripeAPIError)
    def bad_control_request(error: Exception) -> tuple[Response, int]:
        return jsonify({"error": str(error)}), 400

    @bp.get("/clock")
    def get_clock() -> Response:
        return jsonify({"now": state.now()})

    @bp.post("/clock")
    def set_clock() -> Response:
        return jsonify({"now": state.set_clock(float(_body()["now"]))})

    @bp.post("/clock/advance")
    def advance_clock() -> Response:
        return jsonify({"now": state.advance_clock(float(_body()["seconds"]))})

    @bp.post("/invoice_grace_period")
    def set_invoice_grace_period() -> Response:
        seconds = _body()["seconds"]
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise TypeError("`seconds` must be a whole number")
        state.set_invoice_grace_period(seconds)
        return jsonify({"seconds": state.settings.invoice_grace_period_s})

    @bp.get("/faults")
    def get_faults() -> Response:
        return jsonify(faults.config())

    @bp.post("/faults")
    def set_faults() -> Response:
        faults.configure(FaultConfig(**_body()))
        return jsonify(faults.config())

    @bp.post("/rate_limit")
    def set_rate_limit() -> Response:
        rps = _body().get("requests_per_second")
        faults.set_rate_limit(None if rps is None else float(rps))
        return jsonify(faults.config())

    @bp.post("/negative_values")
    def set_negative_values() -> Response:
        state.set_negative_values(str(_body()["mode"]))
        return jsonify({"mode": state.settings.negative_values})

    @bp.post("/last_mode")
    def set_last_mode() -> Response:
        state.set_last_mode(str(_body()["mode"]))
        return jsonify({"mode": state.settings.last_mode})

    @bp.post("/newer_mode")
    def set_newer_mode() -> Response:
        state.set_newer_mode(str(_body()["mode"]))
        return jsonify({"mode": state.settings.newer_mode})

    @bp.post("/unknown_customer_mode")
    def set_unknown_customer_mode() -> Response:
        state.set_unknown_customer_mode(str(_body()["mode"]))
        return jsonify({"mode": state.settings.unknown_customer_mode})

    @bp.post("/webhook_endpoint")
    def set_webhook_endpoint() -> Response:
        state.set_webhook_endpoint(_body().get("url"))
        return jsonify({"url": state.settings.webhook_endpoint})

    @bp.post("/event_destination")
    def set_event_destination() -> Response:
        state.set_event_destination(_body().get("url"))
        return jsonify({"url": state.settings.event_destination})

    @bp.post("/subscriptions/<subscription_id>/payment")
    def settle_subscription_payment(subscription_id: str) -> Response:
        succeeded = _body().get("succeeded", True)
        if not isinstance(succeeded, bool):
            raise TypeError("`succeeded` must be a boolean")
        return jsonify(state.subscriptions.settle_payment(subscription_id, succeeded))

    @bp.get("/meter_events")
    def meter_events() -> Response:
        return jsonify(state.meter_events.records(after=int(request.args.get("after", 0))))

    @bp.get("/error_reports")
    def error_reports() -> Response:
        return jsonify(state.error_reports.records())

    @bp.get("/webhook_deliveries")
    def webhook_deliveries() -> Response:
        return jsonify(list(runtime.deliverer.deliveries))

    @bp.get("/request_count")
    def request_count() -> Response:
        with runtime.counts_lock:
            return jsonify(dict(runtime.counts))

    @bp.get("/endpoint_counts")
    def endpoint_counts() -> Response:
        with runtime.counts_lock:
            return jsonify(dict(runtime.endpoint_counts))

    @bp.get("/contract")
    def contract() -> Response:
        with runtime.counts_lock:
            return jsonify({"checked": dict(runtime.contract), "violations": runtime.violations})

    @bp.post("/reset")
    def reset() -> Response:
        state.reset()
        faults.reset()
        runtime.deliverer.deliveries.clear()
        with runtime.counts_lock:
            runtime.counts.clear()
            runtime.endpoint_counts.clear()
            runtime.violations.clear()
        return jsonify({"reset": True})

    return bp
