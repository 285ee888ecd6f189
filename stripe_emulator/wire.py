"""Stripe's HTTP conventions for one request: API-key auth, parameter decoding, JSON bodies.

v1 takes form-encoded parameters (query string for GET), v2 takes JSON; both answer with
indented JSON like Stripe does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from flask import Response, request

from stripe_emulator.errors import StripeAPIError
from stripe_emulator.forms import decode_pairs

_API_KEY = re.compile(r"sk_test_[0-9A-Za-z_]+")
_MISSING_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)


def _masked(key: str) -> str:
    prefix = key[:8] if key.startswith(("sk_", "rk_", "pk_")) else ""
    return prefix + "*" * max(len(key) - len(prefix) - 4, 0) + key[-4:]


def bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def basic_auth_key() -> str | None:
    """`curl -u sk_test_…:`: the key is the Basic username, the password is empty."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def authenticate() -> str:
    """Stripe takes the secret key as a Bearer token or as the Basic auth username."""
    key = bearer() or basic_auth_key()
    if key is None:
        raise StripeAPIError(401, _MISSING_KEY)
    if not _API_KEY.fullmatch(key):
        raise StripeAPIError(401, f"Invalid API Key provided: {_masked(key)}")
    return key


def is_json_body() -> bool:
    """v2 POSTs carry JSON; everything else is form-encoded (query string for GET)."""
    return request.path.startswith("/v2/") and request.method == "POST"


def params() -> dict[str, Any]:
    if is_json_body():
        body = request.get_json(silent=True, force=True)
        return body if isinstance(body, dict) else {}
    source = request.form if request.method == "POST" else request.args
    return decode_pairs(source.items(multi=True))


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, indent=2), status=status, mimetype="application/json")
