"""Stripe's API routes: each view decodes parameters and calls one resource of the state."""

from __future__ import annotations

from flask import Flask, Response, g, request

from stripe_emulator.errors import rate_limited
from stripe_emulator.runtime import Runtime
from stripe_emulator.wire import bearer, json_response, params

STREAM_PATH = "/v2/billing/meter_event_stream"
_CONCURRENCY = (
    "Too many concurrent requests for this customer and meter: Stripe allows one concurrent "
    "meter event call per customer per meter."
)


def _request() -> dict[str, str | None]:
    """The `request` an event records: this API request and its idempotency key."""
    return {"id": g.request_id, "idempotency_key": request.headers.get("Idempotency-Key")}


def register_routes(app: Flask, runtime: Runtime) -> None:
    state, faults = runtime.state, runtime.faults

    @app.post("/v1/customers")
    def create_customer() -> Response:
        return json_response(state.customers.create(params()))

    @app.get("/v1/customers")
    def list_customers() -> Response:
        return json_response(state.customers.list_page(params()))

    @app.get("/v1/customers/<customer_id>")
    def retrieve_customer(customer_id: str) -> Response:
        return json_response(state.customers.retrieve(customer_id))

    @app.post("/v1/billing/meters")
    def create_meter() -> Response:
        return json_response(state.meters.create(params()))

    @app.get("/v1/billing/meters")
    def list_meters() -> Response:
        return json_response(state.meters.list_page(params()))

    @app.get("/v1/billing/meters/<meter_id>")
    def retrieve_meter(meter_id: str) -> Response:
        return json_response(state.meters.retrieve(meter_id))

    @app.post("/v1/billing/meters/<meter_id>")
    def update_meter(meter_id: str) -> Response:
        return json_response(state.meters.update(meter_id, params()))

    @app.post("/v1/billing/meters/<meter_id>/deactivate")
    def deactivate_meter(meter_id: str) -> Response:
        return json_response(state.meters.set_active(meter_id, False))

    @app.post("/v1/billing/meters/<meter_id>/reactivate")
    def reactivate_meter(meter_id: str) -> Response:
        return json_response(state.meters.set_active(meter_id, True))

    @app.get("/v1/billing/meters/<meter_id>/event_summaries")
    def list_event_summaries(meter_id: str) -> Response:
        return json_response(state.summaries.list_page(meter_id, params()))

    @app.post("/v1/billing/meter_events")
    def create_meter_event() -> Response:
        """Latency is applied while holding the customer+meter slot, so overlap is visible."""
        request_params = params()
        events = state.meter_events
        meter = state.meters.for_event_name(str(request_params.get("event_name") or ""))
        payload = request_params.get("payload")
        customer = None
        if meter is not None and isinstance(payload, dict):
            customer = payload.get(meter["customer_mapping"]["event_payload_key"])
        if meter is None or not customer:
            faults.delay()
            return json_response(events.create(request_params, g.request_id))
        if not events.try_acquire_slot(str(customer), meter["id"]):
            g.no_replay_save = True
            raise rate_limited(_CONCURRENCY)
        try:
            faults.delay()
            return json_response(events.create(request_params, g.request_id))
        finally:
            events.release_slot(str(customer), meter["id"])

    @app.post("/v1/billing/meter_event_adjustments")
    def create_meter_event_adjustment() -> Response:
        return json_response(state.meter_events.cancel(params()))

    @app.post("/v2/billing/meter_event_session")
    def create_meter_event_session() -> Response:
        return json_response(state.stream.create_session())

    @app.post(STREAM_PATH)
    def create_meter_event_stream() -> Response:
        state.stream.check_session(bearer())
        state.stream.stream(params(), g.request_id)
        return json_response({})

    @app.post("/v1/subscriptions")
    def create_subscription() -> Response:
        return json_response(state.subscriptions.create(params(), _request()))

    @app.get("/v1/subscriptions")
    def list_subscriptions() -> Response:
        return json_response(state.subscriptions.list_page(params()))

    @app.get("/v1/subscriptions/<subscription_id>")
    def retrieve_subscription(subscription_id: str) -> Response:
        return json_response(state.subscriptions.retrieve(subscription_id))

    @app.post("/v1/subscriptions/<subscription_id>")
    def update_subscription(subscription_id: str) -> Response:
        return json_response(state.subscriptions.update(subscription_id, params(), _request()))

    @app.post("/v1/subscriptions/<subscription_id>/resume")
    def resume_subscription(subscription_id: str) -> Response:
        return json_response(state.subscriptions.resume(subscription_id, params(), _request()))

    @app.delete("/v1/subscriptions/<subscription_id>")
    def cancel_subscription(subscription_id: str) -> Response:
        return json_response(state.billing.cancel_now(subscription_id, params(), _request()))

    @app.post("/v1/products")
    def create_product() -> Response:
        return json_response(state.catalog.create_product(params()))

    @app.get("/v1/products")
    def list_products() -> Response:
        return json_response(state.catalog.list_products(params()))

    @app.get("/v1/products/<product_id>")
    def retrieve_product(product_id: str) -> Response:
        return json_response(state.catalog.retrieve_product(product_id))

    @app.post("/v1/prices")
    def create_price() -> Response:
        return json_response(state.catalog.create_price(params()))

    @app.get("/v1/prices")
    def list_prices() -> Response:
        return json_response(state.catalog.list_prices(params()))

    @app.get("/v1/prices/<price_id>")
    def retrieve_price(price_id: str) -> Response:
        return json_response(state.catalog.retrieve_price(price_id))

    @app.get("/v1/invoices")
    def list_invoices() -> Response:
        return json_response(state.invoices.list_page(params()))

    @app.post("/v1/invoices/create_preview")
    def create_invoice_preview() -> Response:
        return json_response(state.invoice_previews.create(params()))

    @app.get("/v1/invoices/<invoice_id>")
    def retrieve_invoice(invoice_id: str) -> Response:
        return json_response(state.invoices.retrieve(invoice_id))

    @app.get("/v1/invoices/<invoice_id>/lines")
    def list_invoice_lines(invoice_id: str) -> Response:
        return json_response(state.invoices.lines_page(invoice_id, params()))

    @app.post("/v1/test_helpers/test_clocks")
    def create_test_clock() -> Response:
        return json_response(state.test_clocks.create(params(), _request()))

    @app.get("/v1/test_helpers/test_clocks")
    def list_test_clocks() -> Response:
        return json_response(state.test_clocks.list_page(params()))

    @app.get("/v1/test_helpers/test_clocks/<clock_id>")
    def retrieve_test_clock(clock_id: str) -> Response:
        return json_response(state.test_clocks.retrieve(clock_id))

    @app.post("/v1/test_helpers/test_clocks/<clock_id>/advance")
    def advance_test_clock(clock_id: str) -> Response:
        clocks = state.test_clocks
        return json_response(clocks.advance(clock_id, params(), state.billing.run_due, _request()))

    @app.delete("/v1/test_helpers/test_clocks/<clock_id>")
    def delete_test_clock(clock_id: str) -> Response:
        return json_response(state.test_clocks.delete(clock_id))

    @app.get("/v1/events")
    def list_events() -> Response:
        return json_response(state.events.list_page(params()))

    @app.get("/v1/events/<event_id>")
    def retrieve_event(event_id: str) -> Response:
        return json_response(state.events.retrieve(event_id))

    @app.get("/v2/core/events/<event_id>")
    def retrieve_v2_event(event_id: str) -> Response:
        return json_response(state.error_reports.retrieve_event(event_id))
