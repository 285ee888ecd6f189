"""Every rule a meter event must pass, written once for the v1 endpoint and the v2 stream.

The rules (see shared/reference/stripe-billing-meters.md) are checked in the order Stripe
reports them. A violation is a `RejectedEventError` carrying both forms Stripe uses: the
synchronous 400 of the v1 endpoint and the error-report code of the asynchronous v2 stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stripe_emulator.clock import parse_iso8601
from stripe_emulator.customers import Customers
from stripe_emulator.errors import StripeAPIError, invalid, missing_param
from stripe_emulator.ids import new_id
from stripe_emulator.meters import MAX_NAME_LENGTH, Meters
from stripe_emulator.records import MeterEvent
from stripe_emulator.store import Store
from stripe_emulator.test_clocks import TestClocks

IDENTIFIER_WINDOW_S = 24 * 3600
PAST_WINDOW_S = 35 * 86400
FUTURE_SKEW_S = 5 * 60
MAX_VALUE_DIGITS = 15

_WHOLE_NUMBER = re.compile(r"-?\d+")


@dataclass
class RejectedEventError(Exception):
    """A meter event that breaks a rule: the sync error for v1 and the async code for v2."""

    code: str
    error: StripeAPIError
    meter: str | None = None
    customer: str | None = None


def _parse_value(raw: Any, param: str, negative_allowed: bool) -> int:
    """Whole numbers only, at most 15 digits, like Stripe since 2026-04; negative ones only
    while the `negative_values` switch allows them (Stripe's references disagree)."""
    text = str(raw).strip() if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
    if not _WHOLE_NUMBER.fullmatch(text):
        raise RejectedEventError(
            "meter_event_invalid_value",
            invalid(
                f"Invalid value for {param}: '{raw}'. Meter event values must be whole numbers.",
                param=param,
            ),
        )
    if len(text.lstrip("-").lstrip("0")) > MAX_VALUE_DIGITS:
        raise RejectedEventError(
            "meter_event_value_too_many_digits",
            invalid(
                f"Invalid value for {param}: meter event values cannot have more than "
                f"{MAX_VALUE_DIGITS} significant digits.",
                param=param,
            ),
        )
    if not negative_allowed and text.startswith("-") and int(text) != 0:
        raise RejectedEventError(
            "meter_event_invalid_value",
            invalid(
                f"Invalid value for {param}: '{raw}'. The value must be a positive integer.",
                param=param,
            ),
        )
    return int(text)


def _event_timestamp(raw: Any, now: int, source: str) -> int:
    if raw is None or raw == "":
        return now
    try:
        return parse_iso8601(str(raw)) if source == "v2" else int(str(raw))
    except ValueError:
        raise RejectedEventError(
            "timestamp_invalid", invalid(f"Invalid timestamp: {raw}", param="timestamp")
        ) from None


class MeterEventRules:
    def __init__(
        self, store: Store, meters: Meters, customers: Customers, clocks: TestClocks
    ) -> None:
        self._store = store
        self._meters = meters
        self._customers = customers
        self._clocks = clocks

    def ingest(self, params: dict[str, Any], *, timestamp: Any, source: str) -> MeterEvent:
        """Check every rule, in the order Stripe reports them, then store the event.

        The caller holds the store lock, so the identifier check and the insert are one step.
        The timestamp window and the arrival time are the customer's time (its test clock if
        it has one); identifiers expire on the emulator clock.
        """
        store = self._store
        now = store.clock.now()
        event_name = params.get("event_name")
        if not event_name:
            raise RejectedEventError("no_meter", missing_param("event_name"))
        meter = self._meters.for_event_name(str(event_name))
        if meter is None or meter["status"] != "active":
            code = "no_meter" if meter is None else "archived_meter"
            raise RejectedEventError(
                code,
                invalid(
                    f"No active meter was found for event_name '{event_name}'.",
                    param="event_name",
                ),
                meter=meter["id"] if meter else None,
            )
        payload = params.get("payload")
        if not isinstance(payload, dict):
            raise RejectedEventError("meter_event_no_customer_defined", missing_param("payload"))
        payload = {str(k): str(v) for k, v in payload.items()}
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        customer = payload.get(customer_key)
        identifier = str(params.get("identifier") or new_id("", 32))
        if len(identifier) > MAX_NAME_LENGTH:
            raise RejectedEventError(
                "meter_event_invalid_value",
                invalid(
                    f"identifier must be at most {MAX_NAME_LENGTH} characters.",
                    param="identifier",
                ),
                meter=meter["id"],
            )
        if not customer:
            raise RejectedEventError(
                "meter_event_no_customer_defined",
                invalid(
                    f"Missing required payload key: {customer_key}.",
                    param=f"payload[{customer_key}]",
                ),
                meter=meter["id"],
            )
        customer_now = self._clocks.now_for(customer)
        event_ts = _event_timestamp(timestamp, customer_now, source)
        if event_ts < customer_now - PAST_WINDOW_S:
            raise RejectedEventError(
                "timestamp_too_far_in_past",
                invalid(
                    "The event timestamp cannot be more than 35 days in past. Please send "
                    "events with a timestamp within the past 35 days.",
                    param="timestamp",
                ),
                meter=meter["id"],
                customer=customer,
            )
        if event_ts > customer_now + FUTURE_SKEW_S:
            raise RejectedEventError(
                "timestamp_in_future",
                invalid(
                    "The event timestamp cannot be more than 5 minutes in the future.",
                    param="timestamp",
                ),
                meter=meter["id"],
                customer=customer,
            )
        if value_key in payload:
            negative_allowed = store.settings.negative_values == "allowed"
            value = _parse_value(payload[value_key], f"payload[{value_key}]", negative_allowed)
        elif meter["default_aggregation"]["formula"] == "count":
            value = 1
        else:
            raise RejectedEventError(
                "meter_event_invalid_value",
                invalid(
                    f"Missing required payload key: {value_key}.", param=f"payload[{value_key}]"
                ),
                meter=meter["id"],
                customer=customer,
            )
        first_seen = store.data.identifiers.get(identifier)
        if first_seen is not None and now - first_seen < IDENTIFIER_WINDOW_S:
            raise RejectedEventError(
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
        if not self._customers.exists(customer):
            raise RejectedEventError(
                "meter_event_customer_not_found",
                invalid(f"No such customer: '{customer}'", param=f"payload[{customer_key}]"),
                meter=meter["id"],
                customer=customer,
            )
        event = MeterEvent(
            seq=store.data.next_seq,
            meter=meter["id"],
            event_name=str(event_name),
            customer=customer,
            value=value,
            timestamp=event_ts,
            identifier=identifier,
            received_at=customer_now,
            source=source,
            payload=payload,
        )
        store.data.next_seq += 1
        store.add_event(event)
        store.data.identifiers[identifier] = now
        store.dirty = True
        return event
