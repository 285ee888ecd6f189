"""Stripe's error envelope, raised by the state layer and rendered by the app.

Keeping the status, type, code, param and extra headers together means a rule is written once
(in its resource module) and the SDK still sees exactly the response shape it maps to its
exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

_T = TypeVar("_T")


class StripeAPIError(Exception):
    """An error Stripe would return as `{"error": {...}}` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON body; absent fields are omitted as Stripe omits them (e.g. no `code`)."""
        error: dict[str, Any] = {"message": self.message, "type": self.error_type}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        if request_id is not None:
            error["request_log_url"] = (
                f"https://dashboard.stripe.com/test/logs/{request_id}?t={request_id}"
            )
        return {"error": error}


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeAPIError:
    """The common 400 `invalid_request_error`."""
    return StripeAPIError(400, message, param=param, code=code)


def missing_param(param: str) -> StripeAPIError:
    return invalid(f"Missing required param: {param}.", param=param, code="parameter_missing")


def no_such(kind: str, object_id: str, param: str = "id") -> StripeAPIError:
    return StripeAPIError(
        404, f"No such {kind}: '{object_id}'", param=param, code="resource_missing"
    )


def existing(objects: Mapping[str, _T], kind: str, object_id: str) -> _T:
    """`objects[object_id]`, or the 404 `resource_missing` Stripe answers for an unknown id."""
    found = objects.get(object_id)
    if found is None:
        raise no_such(kind, object_id)
    return found


def rate_limited(message: str) -> StripeAPIError:
    return StripeAPIError(429, message, code="rate_limit")
