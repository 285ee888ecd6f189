"""`Idempotency-Key` at the HTTP edge: replay a saved response, or save this one.

Keys are scoped by API key (or stream token), like Stripe's. A replay must match the original
method, path and raw-body fingerprint, otherwise Stripe answers `idempotency_error`.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, g, request

from stripe_emulator.errors import StripeAPIError
from stripe_emulator.idempotency import IdempotencyKeys
from stripe_emulator.records import SavedResponse
from stripe_emulator.wire import bearer

_KEPT_HEADERS = ("Stripe-Should-Retry",)


def _scope() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return None
    return f"{g.api_key or bearer()}|{key}"


def replayed(keys: IdempotencyKeys) -> Response | None:
    """The saved answer to this request's key, if there is one; marks the request as a replay."""
    scope = _scope()
    saved = keys.saved(scope) if scope else None
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


def save_for_replay(keys: IdempotencyKeys, response: Response, now: Callable[[], int]) -> None:
    """Keep the response unless it is one Stripe lets the client retry (5xx, 401, 429).

    `now` is only read when a response is kept (it takes the store's lock)."""
    scope = _scope()
    cacheable = response.status_code < 500 and response.status_code not in (401, 429)
    if scope and cacheable and not g.get("no_replay_save"):
        keys.save(
            scope,
            SavedResponse(
                method=request.method,
                path=request.path,
                fingerprint=g.fingerprint,
                status=response.status_code,
                body=response.get_data(as_text=True),
                headers={h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers},
                saved_at=now(),
            ),
        )
