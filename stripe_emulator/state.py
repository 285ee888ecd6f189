"""In-memory Stripe state and the Billing Meter rules, behind one lock.

Every rule the pipeline depends on (see shared/reference/stripe-billing-meters.md) lives here,
written once and used by both the v1 endpoint (synchronous errors) and the v2 stream (errors
become error reports, as Stripe validates streams asynchronously). The HTTP layer only decodes
requests and renders what this module returns or raises.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from stripe_emulator.clock import Clock, iso8601, parse_iso8601
from stripe_emulator.errors import (
    StripeAPIError,
    invalid,
    missing_param,
    no_such,
)

LastMode = Literal["timestamp", "arrival"]
UnknownCustomerMode = Literal["async", "reject"]

IDENTIFIER_WINDOW_S = 24 * 3600
CANCEL_WINDOW_S = 24 * 3600
PAST_WINDOW_S = 35 * 86400
FUTURE_SKEW_S = 5 * 60
SESSION_TTL_S = 15 * 60
IDEMPOTENCY_TTL_S = 24 * 3600
MAX_STREAM_EVENTS = 100
MAX_NAME_LENGTH = 100
MAX_VALUE_DIGITS = 15
FORMULAS = ("count", "sum", "last")
GROUPING_WINDOWS = {"day": 86400, "hour": 3600}

_ALPHABET = string.ascii_letters + string.digits
_WHOLE_NUMBER = re.compile(r"-?\d+")


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass
class MeterEvent:
    """An accepted event; `seq` is arrival order, which `last` may be switched to use."""

    seq: int
    meter: str
    event_name: str
    customer: str
    value: int
    timestamp: int
    identifier: str
    received_at: int
    source: str
    payload: dict[str, str]
    cancelled_at: int | None = None


@dataclass
class ErrorReport:
    """An error Stripe finds after accepting a request and reports later as a thin event."""

    id: str
    code: str
    error_message: str
    meter: str | None
    event_name: str
    customer: str | None
    identifier: str
    created: int
    event_id: str
    source: str


@dataclass
class SavedResponse:
    """A response kept for `Idempotency-Key` replay, with what it was an answer to."""

    method: str
    path: str
    fingerprint: str
    status: int
    body: str
    headers: dict[str, str]
    saved_at: int


@dataclass
class _RejectedEventError(Exception):
    """A meter event that breaks a rule: the sync error for v1 and the async code for v2."""

    code: str
    error: StripeAPIError
    meter: str | None = None
    customer: str | None = None


@dataclass
class _Settings:
    last_mode: LastMode = "timestamp"
    unknown_customer_mode: UnknownCustomerMode = "async"
    webhook_endpoint: str | None = None


@dataclass
class _Data:
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    meters: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[MeterEvent] = field(default_factory=list)
    identifiers: dict[str, int] = field(default_factory=dict)
    error_reports: list[ErrorReport] = field(default_factory=list)
    v2_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    idempotency: dict[str, SavedResponse] = field(default_factory=dict)
    next_seq: int = 1


def _int_param(params: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise missing_param(name)
        return None
    try:
        return int(str(raw))
    except ValueError:
        raise invalid(f"Invalid integer: {raw}", param=name) from None


def paginate(items: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
    """Stripe's cursor pagination, so the SDK's `auto_paging_iter` walks every page."""
    limit = _int_param(params, "limit", required=False) or 10
    if not 1 <= limit <= 100:
        raise invalid("Invalid limit: must be between 1 and 100.", param="limit")
    ids = [item["id"] for item in items]
    for cursor in ("starting_after", "ending_before"):
        if params.get(cursor) and params[cursor] not in ids:
            raise invalid(f"Invalid {cursor} id: {params[cursor]}", param=cursor)
    if params.get("starting_after"):
        remaining = items[ids.index(params["starting_after"]) + 1 :]
        page = remaining[:limit]
    elif params.get("ending_before"):
        remaining = items[: ids.index(params["ending_before"])]
        page = remaining[-limit:]
    else:
        remaining = items
        page = remaining[:limit]
    return {"object": "list", "data": page, "has_more": len(remaining) > limit, "url": url}


def _parse_value(raw: Any, param: str) -> int:
    """Whole numbers only (negative allowed), at most 15 digits, like Stripe since 2026-04."""
    text = str(raw).strip() if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
    if not _WHOLE_NUMBER.fullmatch(text):
        raise _RejectedEventError(
            "meter_event_invalid_value",
            invalid(
                f"Invalid value for {param}: '{raw}'. Meter event values must be whole numbers.",
                param=param,
            ),
        )
    if len(text.lstrip("-").lstrip("0")) > MAX_VALUE_DIGITS:
        raise _RejectedEventError(
            "meter_event_value_too_many_digits",
            invalid(
                f"Invalid value for {param}: meter event values cannot have more than "
                f"{MAX_VALUE_DIGITS} significant digits.",
                param=param,
            ),
        )
    return int(text)


class EmulatorState:
    """All emulated Stripe objects plus the switches tests flip; one lock guards everything."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clock = Clock()
        self.settings = _Settings()
        self.data = _Data()
        self.dirty = False
        self._inflight: set[tuple[str, str]] = set()
        self._outbox: list[dict[str, Any]] = []

    # -- clock and switches -------------------------------------------------------------------

    def now(self) -> int:
        with self.lock:
            return self.clock.now()

    def advance_clock(self, seconds: float) -> int:
        with self.lock:
            self.clock.advance(seconds)
            self.dirty = True
            return self.clock.now()

    def set_clock(self, unix_ts: float) -> int:
        with self.lock:
            self.clock.set(unix_ts)
            self.dirty = True
            return self.clock.now()

    def set_last_mode(self, mode: str) -> None:
        if mode not in ("timestamp", "arrival"):
            raise invalid(f"Invalid last mode: {mode}", param="mode")
        with self.lock:
            self.settings.last_mode = mode  # type: ignore[assignment]

    def set_unknown_customer_mode(self, mode: str) -> None:
        if mode not in ("async", "reject"):
            raise invalid(f"Invalid unknown customer mode: {mode}", param="mode")
        with self.lock:
            self.settings.unknown_customer_mode = mode  # type: ignore[assignment]

    def set_webhook_endpoint(self, url: str | None) -> None:
        with self.lock:
            self.settings.webhook_endpoint = url or None

    def reset(self) -> None:
        with self.lock:
            self.clock = Clock()
            self.settings = _Settings()
            self.data = _Data()
            self._inflight.clear()
            self._outbox.clear()
            self.dirty = True

    # -- customers ----------------------------------------------------------------------------

    def create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            customer_id = new_id("cus_", 14)
            customer: dict[str, Any] = {
                "id": customer_id,
                "object": "customer",
                "address": None,
                "balance": 0,
                "created": self.clock.now(),
                "currency": None,
                "default_source": None,
                "delinquent": False,
                "description": params.get("description"),
                "email": params.get("email"),
                "invoice_prefix": customer_id[4:12].upper(),
                "invoice_settings": {
                    "custom_fields": None,
                    "default_payment_method": None,
                    "footer": None,
                    "rendering_options": None,
                },
                "livemode": False,
                "metadata": dict(params.get("metadata") or {}),
                "name": params.get("name"),
                "phone": params.get("phone"),
                "preferred_locales": [],
                "shipping": None,
                "tax_exempt": "none",
                "test_clock": None,
            }
            self.data.customers[customer_id] = customer
            self.dirty = True
            return customer

    def get_customer(self, customer_id: str) -> dict[str, Any]:
        with self.lock:
            customer = self.data.customers.get(customer_id)
            if customer is None:
                raise no_such("customer", customer_id)
            return customer

    def list_customers(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            items = list(reversed(self.data.customers.values()))
            if params.get("email"):
                items = [c for c in items if c["email"] == params["email"]]
            return paginate(items, params, "/v1/customers")

    # -- meters -------------------------------------------------------------------------------

    def create_meter(self, params: dict[str, Any]) -> dict[str, Any]:
        display_name = params.get("display_name")
        event_name = params.get("event_name")
        formula = (params.get("default_aggregation") or {}).get("formula")
        if not display_name:
            raise missing_param("display_name")
        if not event_name:
            raise missing_param("event_name")
        if not formula:
            raise missing_param("default_aggregation[formula]")
        if formula not in FORMULAS:
            raise invalid(
                f"Invalid default_aggregation[formula]: must be one of {', '.join(FORMULAS)}",
                param="default_aggregation[formula]",
            )
        if len(event_name) > MAX_NAME_LENGTH:
            raise invalid(
                f"event_name must be at most {MAX_NAME_LENGTH} characters.", param="event_name"
            )
        customer_mapping = params.get("customer_mapping") or {}
        value_settings = params.get("value_settings") or {}
        window = params.get("event_time_window")
        if window is not None and window not in GROUPING_WINDOWS:
            raise invalid(
                "Invalid event_time_window: must be day or hour", param="event_time_window"
            )
        with self.lock:
            if any(m["event_name"] == event_name for m in self.data.meters.values()):
                raise invalid(
                    f"A meter with event_name '{event_name}' already exists.", param="event_name"
                )
            now = self.clock.now()
            meter = {
                "id": new_id("mtr_test_"),
                "object": "billing.meter",
                "created": now,
                "customer_mapping": {
                    "event_payload_key": customer_mapping.get(
                        "event_payload_key", "stripe_customer_id"
                    ),
                    "type": customer_mapping.get("type", "by_id"),
                },
                "default_aggregation": {"formula": formula},
                "display_name": display_name,
                "event_name": event_name,
                "event_time_window": window,
                "livemode": False,
                "status": "active",
                "status_transitions": {"deactivated_at": None},
                "updated": now,
                "value_settings": {
                    "event_payload_key": value_settings.get("event_payload_key", "value")
                },
            }
            self.data.meters[meter["id"]] = meter
            self.dirty = True
            return meter

    def get_meter(self, meter_id: str) -> dict[str, Any]:
        with self.lock:
            meter = self.data.meters.get(meter_id)
            if meter is None:
                raise no_such("billing.meter", meter_id)
            return meter

    def list_meters(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            items = list(reversed(self.data.meters.values()))
            if params.get("status"):
                items = [m for m in items if m["status"] == params["status"]]
            return paginate(items, params, "/v1/billing/meters")

    def update_meter(self, meter_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Only the display name can change: a meter's aggregation is fixed at creation."""
        unsupported = set(params) - {"display_name", "expand"}
        if unsupported:
            name = sorted(unsupported)[0]
            raise invalid(f"Received unknown parameter: {name}", param=name)
        with self.lock:
            meter = self.get_meter(meter_id)
            if params.get("display_name"):
                meter["display_name"] = params["display_name"]
                meter["updated"] = self.clock.now()
                self.dirty = True
            return meter

    def set_meter_active(self, meter_id: str, active: bool) -> dict[str, Any]:
        with self.lock:
            meter = self.get_meter(meter_id)
            now = self.clock.now()
            meter["status"] = "active" if active else "inactive"
            meter["status_transitions"] = {"deactivated_at": None if active else now}
            meter["updated"] = now
            self.dirty = True
            return meter

    # -- meter events -------------------------------------------------------------------------

    def meter_for(self, event_name: str) -> dict[str, Any] | None:
        with self.lock:
            return next(
                (m for m in self.data.meters.values() if m["event_name"] == event_name), None
            )

    def try_acquire_slot(self, customer: str, meter_id: str) -> bool:
        """Stripe allows one concurrent meter event call per customer per meter."""
        with self.lock:
            if (customer, meter_id) in self._inflight:
                return False
            self._inflight.add((customer, meter_id))
            return True

    def release_slot(self, customer: str, meter_id: str) -> None:
        with self.lock:
            self._inflight.discard((customer, meter_id))

    def create_meter_event(self, params: dict[str, Any], request_id: str) -> dict[str, Any]:
        """v1: rule violations are synchronous 400s, except what Stripe checks later."""
        with self.lock:
            try:
                event = self._ingest(params, timestamp=params.get("timestamp"), source="v1")
            except _RejectedEventError as rejection:
                if rejection.code != "meter_event_customer_not_found" or (
                    self.settings.unknown_customer_mode == "reject"
                ):
                    raise rejection.error from None
                self._report(rejection, params, request_id, source="v1")
                return self._meter_event_object(params, self.clock.now())
            return self._meter_event_object(params, event.received_at, event)

    def _meter_event_object(
        self, params: dict[str, Any], now: int, event: MeterEvent | None = None
    ) -> dict[str, Any]:
        return {
            "object": "billing.meter_event",
            "created": now,
            "event_name": params.get("event_name"),
            "identifier": event.identifier if event else params.get("identifier"),
            "livemode": False,
            "payload": event.payload if event else dict(params.get("payload") or {}),
            "timestamp": event.timestamp if event else now,
        }

    def _ingest(self, params: dict[str, Any], *, timestamp: Any, source: str) -> MeterEvent:
        """Check every rule, in the order Stripe reports them, then store the event."""
        now = self.clock.now()
        event_name = params.get("event_name")
        if not event_name:
            raise _RejectedEventError("no_meter", missing_param("event_name"))
        meter = self.meter_for(str(event_name))
        if meter is None or meter["status"] != "active":
            code = "no_meter" if meter is None else "archived_meter"
            raise _RejectedEventError(
                code,
                invalid(
                    f"No active meter was found for event_name '{event_name}'.",
                    param="event_name",
                ),
                meter=meter["id"] if meter else None,
            )
        payload = params.get("payload")
        if not isinstance(payload, dict):
            raise _RejectedEventError("meter_event_no_customer_defined", missing_param("payload"))
        payload = {str(k): str(v) for k, v in payload.items()}
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        customer = payload.get(customer_key)
        identifier = str(params.get("identifier") or new_id("", 32))
        if len(identifier) > MAX_NAME_LENGTH:
            raise _RejectedEventError(
                "meter_event_invalid_value",
                invalid(
                    f"identifier must be at most {MAX_NAME_LENGTH} characters.",
                    param="identifier",
                ),
                meter=meter["id"],
            )
        if not customer:
            raise _RejectedEventError(
                "meter_event_no_customer_defined",
                invalid(
                    f"Missing required payload key: {customer_key}.",
                    param=f"payload[{customer_key}]",
                ),
                meter=meter["id"],
            )
        event_ts = self._event_timestamp(timestamp, now, source)
        if event_ts < now - PAST_WINDOW_S:
            raise _RejectedEventError(
                "timestamp_too_far_in_past",
                invalid(
                    "The event timestamp cannot be more than 35 days in past. Please send "
                    "events with a timestamp within the past 35 days.",
                    param="timestamp",
                ),
                meter=meter["id"],
                customer=customer,
            )
        if event_ts > now + FUTURE_SKEW_S:
            raise _RejectedEventError(
                "timestamp_in_future",
                invalid(
                    "The event timestamp cannot be more than 5 minutes in the future.",
                    param="timestamp",
                ),
                meter=meter["id"],
                customer=customer,
            )
        if value_key in payload:
            value = _parse_value(payload[value_key], f"payload[{value_key}]")
        elif meter["default_aggregation"]["formula"] == "count":
            value = 1
        else:
            raise _RejectedEventError(
                "meter_event_invalid_value",
                invalid(
                    f"Missing required payload key: {value_key}.", param=f"payload[{value_key}]"
                ),
                meter=meter["id"],
                customer=customer,
            )
        first_seen = self.data.identifiers.get(identifier)
        if first_seen is not None and now - first_seen < IDENTIFIER_WINDOW_S:
            raise _RejectedEventError(
                "duplicate_identifier",
                StripeAPIError(
                    400,
                    f"An event already exists with identifier {identifier}.",
                    param="identifier",
                    headers={"Stripe-Should-Retry": "false"},
                ),
                meter=meter["id"],
                customer=customer,
            )
        if customer not in self.data.customers:
            raise _RejectedEventError(
                "meter_event_customer_not_found",
                invalid(f"No such customer: '{customer}'", param=f"payload[{customer_key}]"),
                meter=meter["id"],
                customer=customer,
            )
        event = MeterEvent(
            seq=self.data.next_seq,
            meter=meter["id"],
            event_name=str(event_name),
            customer=customer,
            value=value,
            timestamp=event_ts,
            identifier=identifier,
            received_at=now,
            source=source,
            payload=payload,
        )
        self.data.next_seq += 1
        self.data.events.append(event)
        self.data.identifiers[identifier] = now
        self.dirty = True
        return event

    @staticmethod
    def _event_timestamp(raw: Any, now: int, source: str) -> int:
        if raw is None or raw == "":
            return now
        try:
            return parse_iso8601(str(raw)) if source == "v2" else int(str(raw))
        except ValueError:
            raise _RejectedEventError(
                "timestamp_invalid", invalid(f"Invalid timestamp: {raw}", param="timestamp")
            ) from None

    def _report(
        self,
        rejection: _RejectedEventError,
        params: dict[str, Any],
        request_id: str,
        *,
        source: str,
    ) -> None:
        """Record an asynchronous error and the thin v2 event Stripe would send for it."""
        now = self.clock.now()
        identifier = str(params.get("identifier") or request_id)
        event_id = new_id("evt_test_", 32)
        message = rejection.error.message
        report = ErrorReport(
            id=new_id("mtrerr_"),
            code=rejection.code,
            error_message=message,
            meter=rejection.meter,
            event_name=str(params.get("event_name") or ""),
            customer=rejection.customer,
            identifier=identifier,
            created=now,
            event_id=event_id,
            source=source,
        )
        event: dict[str, Any] = {
            "id": event_id,
            "object": "v2.core.event",
            "type": "v1.billing.meter.error_report_triggered",
            "created": iso8601(now),
            "livemode": False,
            "context": None,
            "reason": None,
            "data": {
                "developer_message_summary": message,
                "reason": {
                    "error_count": 1,
                    "error_types": [
                        {
                            "code": rejection.code,
                            "error_count": 1,
                            "sample_errors": [
                                {"error_message": message, "request": {"identifier": identifier}}
                            ],
                        }
                    ],
                },
                "validation_start": iso8601(now),
                "validation_end": iso8601(now),
            },
        }
        if rejection.meter is not None:
            event["related_object"] = {
                "id": rejection.meter,
                "type": "billing.meter",
                "url": f"/v1/billing/meters/{rejection.meter}",
            }
        else:
            event["type"] = "v1.billing.meter.no_meter_found"
        self.data.error_reports.append(report)
        self.data.v2_events[event_id] = event
        self._outbox.append(event)
        self.dirty = True

    def cancel_meter_event(self, params: dict[str, Any]) -> dict[str, Any]:
        """Adjustments can only cancel, and only within 24 h of Stripe receiving the event."""
        if params.get("type", "cancel") != "cancel":
            raise invalid("Invalid type: must be cancel", param="type")
        event_name = params.get("event_name")
        identifier = (params.get("cancel") or {}).get("identifier")
        if not event_name:
            raise missing_param("event_name")
        if not identifier:
            raise missing_param("cancel[identifier]")
        with self.lock:
            now = self.clock.now()
            event = next(
                (
                    e
                    for e in reversed(self.data.events)
                    if e.identifier == identifier and e.event_name == event_name
                ),
                None,
            )
            if event is None:
                raise invalid(
                    f"No meter event found with identifier {identifier} for event_name "
                    f"'{event_name}'.",
                    param="cancel[identifier]",
                )
            if now - event.received_at >= CANCEL_WINDOW_S:
                raise invalid(
                    "Meter events can only be cancelled within 24 hours of being received.",
                    param="cancel[identifier]",
                )
            if event.cancelled_at is not None:
                raise invalid(
                    f"The meter event with identifier {identifier} has already been cancelled.",
                    param="cancel[identifier]",
                )
            event.cancelled_at = now
            self.dirty = True
            return {
                "object": "billing.meter_event_adjustment",
                "cancel": {"identifier": identifier},
                "event_name": event_name,
                "livemode": False,
                "status": "pending",
                "type": "cancel",
            }

    # -- summaries ----------------------------------------------------------------------------

    def event_summaries(self, meter_id: str, params: dict[str, Any]) -> dict[str, Any]:
        customer = params.get("customer")
        if not customer:
            raise missing_param("customer")
        start = _int_param(params, "start_time")
        end = _int_param(params, "end_time")
        assert start is not None and end is not None
        for name, value in (("start_time", start), ("end_time", end)):
            if value % 60:
                raise invalid(f"{name} must be aligned with minute boundaries.", param=name)
        if start >= end:
            raise invalid("start_time must be before end_time.", param="start_time")
        grouping = params.get("value_grouping_window")
        if grouping is not None and grouping not in GROUPING_WINDOWS:
            raise invalid(
                "Invalid value_grouping_window: must be one of day, hour",
                param="value_grouping_window",
            )
        with self.lock:
            meter = self.get_meter(meter_id)
            self.get_customer(str(customer))
            if grouping is None:
                windows = [(start, end)]
            else:
                size = GROUPING_WINDOWS[grouping]
                for name, value in (("start_time", start), ("end_time", end)):
                    if value % size:
                        raise invalid(
                            f"{name} must be aligned with the value_grouping_window ({grouping}) "
                            "boundaries in UTC.",
                            param=name,
                        )
                windows = [(s, s + size) for s in range(start, end, size)]
            events = [
                e
                for e in self.data.events
                if e.meter == meter_id and e.customer == customer and e.cancelled_at is None
            ]
            formula = meter["default_aggregation"]["formula"]
            summaries = [
                self._summary(meter_id, str(customer), s, e, events, formula) for s, e in windows
            ]
            return paginate(summaries, params, f"/v1/billing/meters/{meter_id}/event_summaries")

    def _summary(
        self,
        meter_id: str,
        customer: str,
        start: int,
        end: int,
        events: list[MeterEvent],
        formula: str,
    ) -> dict[str, Any]:
        inside = [e for e in events if start <= e.timestamp < end]
        value: float
        if formula == "count":
            value = float(len(inside))
        elif formula == "sum":
            value = float(sum(e.value for e in inside))
        elif not inside:
            value = 0.0
        elif self.settings.last_mode == "arrival":
            value = float(max(inside, key=lambda e: e.seq).value)
        else:
            value = float(max(inside, key=lambda e: (e.timestamp, e.seq)).value)
        digest = hashlib.sha256(f"{meter_id}|{customer}|{start}|{end}".encode()).hexdigest()
        return {
            "id": f"mtrusg_test_{digest[:40]}",
            "object": "billing.meter_event_summary",
            "aggregated_value": value,
            "end_time": end,
            "livemode": False,
            "meter": meter_id,
            "start_time": start,
        }

    # -- v2 meter event stream ----------------------------------------------------------------

    def create_session(self) -> dict[str, Any]:
        with self.lock:
            now = self.clock.now()
            token = new_id("meter_event_session_token_", 40)
            self.data.sessions[token] = now + SESSION_TTL_S
            return {
                "id": new_id("mes_test_"),
                "object": "v2.billing.meter_event_session",
                "authentication_token": token,
                "created": iso8601(now),
                "expires_at": iso8601(now + SESSION_TTL_S),
                "livemode": False,
            }

    def check_session(self, token: str | None) -> None:
        with self.lock:
            expires_at = self.data.sessions.get(token or "")
            if expires_at is None:
                raise StripeAPIError(
                    401,
                    "Invalid authentication token for the meter event stream.",
                    error_type="authentication_error",
                )
            if self.clock.now() >= expires_at:
                raise StripeAPIError(
                    401,
                    "The meter event session has expired. Create a new meter event session.",
                    error_type="temporary_session_expired",
                    code="billing_meter_event_session_expired",
                )

    def stream_meter_events(self, body: Any, request_id: str) -> None:
        """Schema errors are synchronous; every rule violation becomes an error report."""
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or not events:
            raise invalid("events must be a non-empty array.", param="events")
        if len(events) > MAX_STREAM_EVENTS:
            raise invalid(
                f"events can contain at most {MAX_STREAM_EVENTS} items, got {len(events)}.",
                param="events",
            )
        for index, item in enumerate(events):
            if not isinstance(item, dict) or not isinstance(item.get("payload"), dict):
                raise invalid(f"events[{index}] must have a payload object.", param="events")
            if not item.get("event_name"):
                raise missing_param(f"events[{index}].event_name")
        with self.lock:
            for item in events:
                try:
                    self._ingest(item, timestamp=item.get("timestamp"), source="v2")
                except _RejectedEventError as rejection:
                    if rejection.code != "duplicate_identifier":
                        self._report(rejection, item, request_id, source="v2")

    # -- v2 events, idempotency, inspection ---------------------------------------------------

    def get_v2_event(self, event_id: str) -> dict[str, Any]:
        with self.lock:
            event = self.data.v2_events.get(event_id)
            if event is None:
                raise no_such("event", event_id)
            return event

    def drain_notifications(self) -> list[dict[str, Any]]:
        """Thin events produced since the last call, for the webhook deliverer."""
        with self.lock:
            drained, self._outbox = self._outbox, []
            return drained

    def saved_response(self, scope_key: str) -> SavedResponse | None:
        with self.lock:
            saved = self.data.idempotency.get(scope_key)
            if saved is not None and self.clock.now() - saved.saved_at >= IDEMPOTENCY_TTL_S:
                del self.data.idempotency[scope_key]
                return None
            return saved

    def save_response(self, scope_key: str, saved: SavedResponse) -> None:
        with self.lock:
            self.data.idempotency.setdefault(scope_key, saved)
            self.dirty = True

    def meter_events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [asdict(e) for e in self.data.events]

    def error_reports(self) -> list[dict[str, Any]]:
        with self.lock:
            return [asdict(r) for r in self.data.error_reports]

    # -- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            self.dirty = False
            return {
                "clock_offset": self.clock.offset,
                "settings": asdict(self.settings),
                "data": asdict(self.data),
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        with self.lock:
            data = dict(snapshot["data"])
            data["events"] = [MeterEvent(**e) for e in data["events"]]
            data["error_reports"] = [ErrorReport(**r) for r in data["error_reports"]]
            data["idempotency"] = {k: SavedResponse(**v) for k, v in data["idempotency"].items()}
            self.data = _Data(**data)
            self.settings = _Settings(**snapshot["settings"])
            self.clock = Clock(snapshot["clock_offset"])
            self.dirty = False
