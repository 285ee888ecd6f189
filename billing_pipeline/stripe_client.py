"""The one narrow interface between the pipeline and Stripe Billing Meters.

Everything Stripe-specific (SDK calls, error shapes, retry rules) stays here, so the ledger and
the Dagster assets speak only of outcomes. Stripe's own docs now steer new integrations to
Metronome; keeping this seam small keeps that door open.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import stripe
from stripe.params.v2.billing import MeterEventStreamCreateParams

from billing_pipeline.usage.meters import Meter

logger = logging.getLogger(__name__)

# How Stripe's synchronous meter event refusals are told apart. Stripe documents no `code` for
# them (its error codes list has none for meter events; the codes of meter error reports are for
# asynchronous refusals, see `meter_errors.py`), so the structured fields come first: `type`
# (`invalid_request_error`), `param` (the field refused) and `Stripe-Should-Retry`, with our own
# knowledge of what we sent (the timestamp). A duplicate identifier is a 400 on `identifier` with
# `Stripe-Should-Retry: false` (reference: stripe-billing-meters.md). Message text is only the
# fallback, for an answer that names no `param`.
DUPLICATE_IDENTIFIER = "An event already exists with identifier"
TOO_OLD = "cannot be more than 35 days in past"
# Stripe's documented code for a too-old event (meter error reports); honoured if it ever comes
# back synchronously.
TOO_OLD_CODE = "timestamp_too_far_in_past"
PAST_WINDOW = timedelta(days=35)
# Stripe's answers to a cancel adjustment it will not make (meter_event_adjustments): both name
# `param=cancel[identifier]` and no code, as does an unknown identifier, so within that param the
# message is the only tell (the fallback, by necessity).
CANCEL_PARAM = "cancel[identifier]"
ALREADY_CANCELLED = "has already been cancelled"
CANCEL_TOO_LATE = "within 24 hours"
T = TypeVar("T")
TRANSIENT_ERRORS = (stripe.RateLimitError, stripe.APIConnectionError, stripe.APIError)
# Stripe's v2 meter event stream takes at most this many events per request.
MAX_STREAM_EVENTS = 100
# A session token lives 15 minutes; a new one is created this long before it runs out, so no
# request in flight (the SDK and our retries can take ~15 s) carries a token about to expire.
SESSION_RENEW_MARGIN_S = 60.0


@dataclass(frozen=True)
class StreamEvent:
    """One meter event for the v2 stream (same identifier and payload as its v1 call)."""

    event_name: str
    customer: str
    value: int
    identifier: str
    timestamp: datetime


class Outcome(enum.Enum):
    SENT = "sent"
    ALREADY_SENT = "already_sent"  # Stripe already holds this identifier: delivered earlier
    EXPIRED = "expired"  # outside Stripe's 35-day window: never clamp it into another period
    REJECTED = "rejected"  # a 4xx that retrying will not fix


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"  # Stripe cancelled it now, or had already cancelled it
    TOO_LATE = "too_late"  # received more than 24 h ago: Stripe keeps counting it
    REJECTED = "rejected"  # another 4xx (an identifier Stripe does not hold)


@dataclass(frozen=True)
class CancelResult:
    outcome: CancelOutcome
    message: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    message: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class RemoteMeter:
    id: str
    event_name: str
    formula: str
    status: str
    display_name: str
    # "day" or "hour" for a pre-aggregated meter (Stripe keeps the newest event per customer and
    # window); None for a raw meter (every event counts).
    event_time_window: str | None = None


@dataclass(frozen=True)
class PreviewLine:
    """One line of Stripe's invoice preview: a price's quantity and amount so far."""

    price: str | None
    quantity: int
    amount: int  # minor units
    currency: str


@dataclass(frozen=True)
class RetryRule:
    """The one retry policy for every Stripe call (the SDK's own retries are switched off).

    A call is retried on what can succeed later (connection errors the SDK marks retryable, 409,
    429, 5xx), and never when Stripe answers `Stripe-Should-Retry: false`; `true` is always
    retried (stripe-python's `_should_retry` reads the header first, and so do we). A
    `Retry-After` header is waited out when given; otherwise exponential backoff with full
    jitter. Bounded twice: at most `attempts` HTTP requests per logical call, and no retry
    starts after `deadline_seconds`, so a call ends within the deadline plus one request's
    timeout (defaults: 4 requests, 20 s + 30 s).
    """

    attempts: int = 4
    base_seconds: float = 0.5
    cap_seconds: float = 4.0
    deadline_seconds: float = 20.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cap_seconds)
        return random.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))


def should_retry(error: Exception) -> bool:
    """Whether a failed request may succeed if repeated: Stripe's header first, then the kind."""
    if not isinstance(error, stripe.StripeError):
        return False
    headers = _headers(error)
    flag = headers.get("stripe-should-retry")
    if flag in ("true", "false"):
        return flag == "true"
    if isinstance(error, stripe.APIConnectionError):
        return error.should_retry
    status = error.http_status or 0
    return status in (409, 429) or status >= 500


def _headers(error: stripe.StripeError) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (error.headers or {}).items()}


def _retry_after(error: Exception) -> float | None:
    if not isinstance(error, stripe.StripeError):
        return None
    try:
        return max(0.0, float(_headers(error)["retry-after"]))
    except (KeyError, ValueError):
        return None


class StripeBilling:
    """The Stripe calls the pipeline makes, through the official SDK: meter events and their
    summaries for reporting; events and subscriptions for the webhook flow."""

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        timeout_seconds: float = 30.0,
        retry: RetryRule | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # The SDK does not retry (max_network_retries=0): `RetryRule` is the one policy, so one
        # logical call is at most `retry.attempts` requests, never attempts x SDK retries.
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base, "meter_events": api_base} if api_base else None,
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout_seconds),
        )
        self.retry = retry or RetryRule()
        self._sleep = sleep
        self._session_lock = threading.Lock()
        # (authentication token, when it expires on the monotonic clock)
        self._session: tuple[str, float] | None = None

    def _with_retries(
        self, call: Callable[[], T], what: str, also: tuple[type[Exception], ...] = ()
    ) -> T:
        """Run `call` under `RetryRule` (also retrying `also`); re-raise the last error."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return call()
            except Exception as error:
                attempt += 1
                if not (isinstance(error, also) or should_retry(error)):
                    raise
                delay = self.retry.delay(attempt - 1, _retry_after(error))
                spent = time.monotonic() - started + delay
                if attempt >= self.retry.attempts or spent > self.retry.deadline_seconds:
                    raise
                logger.info("stripe %s on %s; retrying in %.2fs", type(error).__name__, what, delay)
                self._sleep(delay)

    def list_meters(self) -> list[RemoteMeter]:
        return self._with_retries(self._list_meters, "list meters")

    def _list_meters(self) -> list[RemoteMeter]:
        meters = self.client.v1.billing.meters.list({"limit": 100})
        return [_remote_meter(m) for m in meters.auto_paging_iter()]

    def create_meter(self, meter: Meter, event_time_window: str | None = "hour") -> RemoteMeter:
        """Create the Stripe meter for `meter`: pre-aggregated per hour (as `sync-meters` does)
        unless told otherwise."""
        params: stripe.params.billing.MeterCreateParams = {
            "display_name": meter.display_name,
            "event_name": meter.event_name,
            "default_aggregation": {"formula": meter.aggregation},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
        if event_time_window is not None:
            params["event_time_window"] = event_time_window
        return _remote_meter(self.client.v1.billing.meters.create(params))

    def send_meter_event(
        self, *, event_name: str, customer: str, value: int, identifier: str, timestamp: datetime
    ) -> SendResult:
        """Send one meter event; transient failures are retried, then raised."""
        params: stripe.params.billing.MeterEventCreateParams = {
            "event_name": event_name,
            "identifier": identifier,
            "timestamp": int(timestamp.timestamp()),
            "payload": {"stripe_customer_id": customer, "value": str(value)},
        }
        try:
            # One Idempotency-Key for every attempt of this call: a retry after a lost answer
            # gets the first answer replayed.
            options: stripe.RequestOptions = {"idempotency_key": str(uuid.uuid4())}
            self._with_retries(
                lambda: self.client.v1.billing.meter_events.create(params, options), identifier
            )
        except stripe.InvalidRequestError as error:
            return classify_rejection(error, timestamp)
        return SendResult(Outcome.SENT)

    def cancel_meter_event(self, *, event_name: str, identifier: str) -> CancelResult:
        """Cancel one meter event (`POST /v1/billing/meter_event_adjustments`, `type=cancel`),
        whichever API sent it; transient failures are retried, then raised.

        Stripe cancels only within 24 h of receiving the event. A cancel is safe to repeat:
        "already cancelled" is the outcome wanted.
        """
        params: stripe.params.billing.MeterEventAdjustmentCreateParams = {
            "event_name": event_name,
            "type": "cancel",
            "cancel": {"identifier": identifier},
        }
        options: stripe.RequestOptions = {"idempotency_key": str(uuid.uuid4())}
        try:
            self._with_retries(
                lambda: self.client.v1.billing.meter_event_adjustments.create(params, options),
                f"cancel {identifier}",
            )
        except stripe.InvalidRequestError as error:
            return classify_cancel_rejection(error)
        return CancelResult(CancelOutcome.CANCELLED)

    def stream_meter_events(self, events: Sequence[StreamEvent]) -> SendResult:
        """Send up to 100 events in one v2 stream request (`POST /v2/billing/meter_event_stream`).

        Stripe validates streamed events asynchronously: SENT means accepted for processing, and
        refusals come back later as meter error reports naming the identifiers. Only the
        request's shape is checked synchronously (REJECTED for the whole batch). Duplicates are
        dropped silently, so a resend within Stripe's 24 h dedupe is harmless. The request is
        authenticated with a meter event session's token, renewed before its 15-minute expiry
        and whenever Stripe answers `billing_meter_event_session_expired`
        (https://docs.stripe.com/api/v2/billing-meter-stream).
        """
        if not 0 < len(events) <= MAX_STREAM_EVENTS:
            raise ValueError(f"a stream request carries 1..{MAX_STREAM_EVENTS} events")
        params: MeterEventStreamCreateParams = {
            "events": [
                {
                    "event_name": event.event_name,
                    "identifier": event.identifier,
                    "timestamp": event.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    "payload": {"stripe_customer_id": event.customer, "value": str(event.value)},
                }
                for event in events
            ]
        }

        def send() -> None:
            token = self._session_token()
            try:
                self.client.v2.billing.meter_event_stream.create(params, {"api_key": token})
            except stripe.TemporarySessionExpiredError:
                self._session_token(expired=token)
                raise

        try:
            self._with_retries(send, f"stream of {len(events)} events", also=_SESSION_EXPIRED)
        except stripe.InvalidRequestError as error:
            return SendResult(Outcome.REJECTED, error.user_message or str(error), error.code)
        return SendResult(Outcome.SENT)

    def _session_token(self, expired: str | None = None) -> str:
        """The current session's token; a new session when it is near expiry or `expired`."""
        with self._session_lock:
            current = self._session
            if (
                current is None
                or current[0] == expired
                or current[1] - time.monotonic() < SESSION_RENEW_MARGIN_S
            ):
                session = self.client.v2.billing.meter_event_session.create()
                # Stripe's clock may differ from ours: keep the lifetime it grants, not its time.
                lifetime = _instant(session.expires_at) - _instant(session.created)
                current = (session.authentication_token, time.monotonic() + lifetime)
                self._session = current
            return current[0]

    def event_summary_total(
        self, meter_id: str, customer: str, start: datetime, end: datetime
    ) -> float:
        """Stripe's aggregated value for one customer over [start, end), in day windows."""
        return sum(self.daily_totals(meter_id, customer, start, end).values())

    def period_total(self, meter_id: str, customer: str, start: datetime, end: datetime) -> float:
        """Stripe's aggregate of one customer's meter over [start, end) in one summary (no
        grouping window; instants on minute boundaries, as Stripe requires): what an invoice
        line for that period bills, from the events received so far."""
        params: stripe.params.billing.MeterEventSummaryListParams = {
            "customer": customer,
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
            "limit": 100,
        }

        def total() -> float:
            summaries = self.client.v1.billing.meters.event_summaries.list(meter_id, params)
            return sum(float(s.aggregated_value) for s in summaries.auto_paging_iter())

        return self._with_retries(total, f"period total of {meter_id}")

    def daily_totals(
        self, meter_id: str, customer: str, start: datetime, end: datetime
    ) -> dict[date, float]:
        """Stripe's aggregated value per UTC day in [start, end), for reconciliation.

        One paginated call covers a whole range of days, so reconciling a month costs one call
        per customer and meter rather than one per day. Days Stripe omits count as 0.
        """
        params: stripe.params.billing.MeterEventSummaryListParams = {
            "customer": customer,
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
            "value_grouping_window": "day",
            "limit": 100,
        }

        def totals() -> dict[date, float]:
            summaries = self.client.v1.billing.meters.event_summaries.list(meter_id, params)
            by_day: dict[date, float] = {}
            for summary in summaries.auto_paging_iter():
                day = datetime.fromtimestamp(summary.start_time, tz=UTC).date()
                by_day[day] = by_day.get(day, 0.0) + float(summary.aggregated_value)
            return by_day

        return self._with_retries(totals, f"daily summaries of {meter_id}")

    def retrieve_event(self, event_id: str) -> dict[str, Any]:
        """The full v2 event behind a thin event notification (`GET /v2/core/events/{id}`)."""
        event = self._with_retries(
            lambda: self.client.v2.core.events.retrieve(event_id), f"event {event_id}"
        )
        return event.to_dict()

    def list_events(
        self, types: Sequence[str], created_gte: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Stripe's events of these types (`GET /v1/events`), newest first, every page.

        Stripe keeps events for 30 days; without `created_gte` all of them are listed. Each event
        is the JSON Stripe delivers to webhook endpoints, as plain dicts.
        """
        params: stripe.params.EventListParams = {"types": list(types), "limit": 100}
        if created_gte is not None:
            params["created"] = {"gte": int(created_gte.timestamp())}

        def listing() -> list[dict[str, Any]]:
            pages = self.client.v1.events.list(params)
            return [event.to_dict(for_json=True) for event in pages.auto_paging_iter()]

        return self._with_retries(listing, "list events")

    def retrieve_subscription(self, subscription_id: str) -> Mapping[str, Any]:
        """A subscription's current state (`GET /v1/subscriptions/{id}`), for when the order of
        its events is ambiguous."""
        subscription = self._with_retries(
            lambda: self.client.v1.subscriptions.retrieve(subscription_id),
            f"subscription {subscription_id}",
        )
        return subscription.to_dict()

    def invoice_preview(self, subscription_id: str) -> list[PreviewLine]:
        """The lines of the subscription's next invoice as Stripe previews it now
        (`POST /v1/invoices/create_preview`, one call): each metered price's usage so far in
        the current period. The preview's embedded `lines` hold its first page (10 lines);
        the pipeline's subscriptions price one item per declared meter, well under that."""
        invoice = self._with_retries(
            lambda: self.client.v1.invoices.create_preview({"subscription": subscription_id}),
            f"invoice preview of {subscription_id}",
        )
        lines = []
        for line in invoice.lines.data:
            details = line.pricing.price_details if line.pricing else None
            price = None if details is None else details.price
            lines.append(
                PreviewLine(
                    price=price if isinstance(price, str) or price is None else price.id,
                    quantity=int(line.quantity or 0),
                    amount=int(line.amount),
                    currency=str(line.currency),
                )
            )
        return lines

    def price_meter(self, price_id: str) -> str | None:
        """The meter a price bills (`recurring.meter`), None for a price that is not metered:
        how an invoice line is tied back to a declared meter."""
        price = self._with_retries(
            lambda: self.client.v1.prices.retrieve(price_id), f"price {price_id}"
        ).to_dict()
        recurring = price.get("recurring") or {}
        meter = recurring.get("meter")
        return meter if isinstance(meter, str) else None


def _instant(value: object) -> float:
    """Seconds since the epoch of a v2 timestamp (ISO 8601, `Z` for UTC)."""
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


_SESSION_EXPIRED: tuple[type[Exception], ...] = (stripe.TemporarySessionExpiredError,)


def _remote_meter(meter: stripe.billing.Meter) -> RemoteMeter:
    return RemoteMeter(
        id=meter.id,
        event_name=meter.event_name,
        formula=meter.default_aggregation.formula,
        status=meter.status,
        display_name=meter.display_name,
        event_time_window=getattr(meter, "event_time_window", None),
    )


def classify_rejection(error: stripe.InvalidRequestError, timestamp: datetime) -> SendResult:
    """What a 4xx to one v1 meter event means, from Stripe's structured fields first."""
    message = error.user_message or str(error)
    param = error.param
    if param == "identifier" and _headers(error).get("stripe-should-retry") == "false":
        return SendResult(Outcome.ALREADY_SENT, message)
    if error.code == TOO_OLD_CODE or (
        param == "timestamp" and timestamp < datetime.now(UTC) - PAST_WINDOW
    ):
        return SendResult(Outcome.EXPIRED, message, error.code)
    if param is None and DUPLICATE_IDENTIFIER in message:
        return SendResult(Outcome.ALREADY_SENT, message)
    if param is None and TOO_OLD in message:
        return SendResult(Outcome.EXPIRED, message, error.code)
    return SendResult(Outcome.REJECTED, message, error.code or _param_code(param))


def classify_cancel_rejection(error: stripe.InvalidRequestError) -> CancelResult:
    """What a 4xx to one cancel adjustment means: only a refusal about the identifier can be
    "already cancelled" or "too late"; anything else (another param) is a plain rejection."""
    message = error.user_message or str(error)
    if error.param in (CANCEL_PARAM, None):
        if ALREADY_CANCELLED in message:
            return CancelResult(CancelOutcome.CANCELLED, message)
        if CANCEL_TOO_LATE in message:
            return CancelResult(CancelOutcome.TOO_LATE, message, error.code)
    return CancelResult(CancelOutcome.REJECTED, message, error.code or _param_code(error.param))


def _param_code(param: str | None) -> str | None:
    """A stable `error_code` for the ledger when Stripe gives none: the parameter it refused."""
    return f"invalid_param:{param}" if param else None
