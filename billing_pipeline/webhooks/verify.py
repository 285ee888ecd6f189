"""Signature verification of a raw webhook body with the stripe SDK, for several secrets.

Several secrets are accepted so an endpoint secret can be rolled: during the overlap Stripe signs
with the new secret while deliveries signed with the old one are still in flight.
"""

from __future__ import annotations

from collections.abc import Sequence

import stripe
from stripe.v2.core import EventNotification

from billing_pipeline.webhooks.events import MalformedEventError

DEFAULT_TOLERANCE_SECONDS = 300
# Parsing needs a client object but no API key: the receiver never calls Stripe, so it holds no
# secret key (the processing job fetches the full event with its own).
_THIN_EVENT_PARSER = stripe.StripeClient("")


class InvalidSignatureError(Exception):
    """No secret verifies the `Stripe-Signature` header over the raw body.

    The message never includes the header, the body or a secret.
    """


def parse_secrets(value: str | None) -> tuple[str, ...]:
    """Split `STRIPE_WEBHOOK_SECRET` (comma-separated, for rotation) into its secrets."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def verify_signature(
    raw_body: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Return the body as text if one of `secrets` signed it within `tolerance` seconds.

    Stripe signs the UTF-8 text of the body, so a body that is not UTF-8 cannot be genuine. The
    SDK compares signatures with `hmac.compare_digest`, which raises TypeError on non-ASCII
    text: such headers are refused here first so every bad input ends as InvalidSignatureError.
    """
    text = _decoded(raw_body, header)
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
        except stripe.SignatureVerificationError:
            continue
        return text
    raise InvalidSignatureError("no webhook secret verifies the signature")


def verify_thin_event(
    raw_body: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> tuple[str, EventNotification]:
    """Verify and parse a thin event notification with the SDK's `parse_event_notification`.

    Return the body text and the notification. Raises InvalidSignatureError when no secret
    verifies it, and MalformedEventError when it is signed but not a thin event; the SDK checks
    the signature before it parses, so nothing unsigned is ever parsed.
    """
    text = _decoded(raw_body, header)
    for secret in secrets:
        try:
            notification = _THIN_EVENT_PARSER.parse_event_notification(
                text, header, secret, tolerance
            )
        except stripe.SignatureVerificationError:
            continue
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
            raise MalformedEventError(f"not a thin event: {type(error).__name__}") from error
        return text, notification
    raise InvalidSignatureError("no webhook secret verifies the signature")


def _decoded(raw_body: bytes, header: str | None) -> str:
    if not header:
        raise InvalidSignatureError("missing Stripe-Signature header")
    if not header.isascii():
        raise InvalidSignatureError("Stripe-Signature header is not ASCII")
    try:
        return raw_body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidSignatureError("body is not UTF-8, so Stripe cannot have signed it") from error
