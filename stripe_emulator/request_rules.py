"""Every request's parameters checked against Stripe's published definition of its operation.

The definition of each endpoint is the params TypedDict the pinned stripe SDK generates from
Stripe's OpenAPI spec (`ENDPOINT_PARAMS`, by the Flask view that serves it): a name it does not
declare, a missing required one, a value of the wrong type or outside its enum is refused the
way Stripe refuses it, before any resource sees the request. Length limits are not carried by
the SDK's types: they come from its docstrings ("up to N characters") and from `LENGTH_LIMITS`,
the `maxLength` values of Stripe's OpenAPI spec for the parameters the emulator serves.

v1 parameters arrive form-encoded, so every leaf is a string there and "3" is an integer; v2
bodies are JSON and carry their own types.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import textwrap
from decimal import Decimal, InvalidOperation
from typing import Any

from stripe.params import (
    CustomerCreateParams,
    CustomerListParams,
    CustomerRetrieveParams,
    EventListParams,
    EventRetrieveParams,
    InvoiceCreatePreviewParams,
    InvoiceListLinesParams,
    InvoiceListParams,
    InvoiceRetrieveParams,
    PriceCreateParams,
    PriceListParams,
    PriceRetrieveParams,
    ProductCreateParams,
    ProductListParams,
    ProductRetrieveParams,
    SubscriptionCancelParams,
    SubscriptionCreateParams,
    SubscriptionListParams,
    SubscriptionResumeParams,
    SubscriptionRetrieveParams,
    SubscriptionUpdateParams,
)
from stripe.params.billing import (
    MeterCreateParams,
    MeterDeactivateParams,
    MeterEventAdjustmentCreateParams,
    MeterEventCreateParams,
    MeterListEventSummariesParams,
    MeterListParams,
    MeterReactivateParams,
    MeterRetrieveParams,
    MeterUpdateParams,
)
from stripe.params.test_helpers import (
    TestClockAdvanceParams,
    TestClockCreateParams,
    TestClockDeleteParams,
    TestClockListParams,
    TestClockRetrieveParams,
)
from stripe.params.v2.billing import (
    MeterEventSessionCreateParams,
    MeterEventStreamCreateParams,
)
from stripe.params.v2.core import EventRetrieveParams as V2EventRetrieveParams

from stripe_emulator.errors import StripeAPIError, invalid, missing_param
from stripe_emulator.sdk_types import Kind, typed_dict

# The Flask view of each endpoint -> the SDK params type of its operation.
ENDPOINT_PARAMS: dict[str, type] = {
    "create_customer": CustomerCreateParams,
    "list_customers": CustomerListParams,
    "retrieve_customer": CustomerRetrieveParams,
    "create_meter": MeterCreateParams,
    "list_meters": MeterListParams,
    "retrieve_meter": MeterRetrieveParams,
    "update_meter": MeterUpdateParams,
    "deactivate_meter": MeterDeactivateParams,
    "reactivate_meter": MeterReactivateParams,
    "list_event_summaries": MeterListEventSummariesParams,
    "create_meter_event": MeterEventCreateParams,
    "create_meter_event_adjustment": MeterEventAdjustmentCreateParams,
    "create_meter_event_session": MeterEventSessionCreateParams,
    "create_meter_event_stream": MeterEventStreamCreateParams,
    "retrieve_v2_event": V2EventRetrieveParams,
    "create_subscription": SubscriptionCreateParams,
    "list_subscriptions": SubscriptionListParams,
    "retrieve_subscription": SubscriptionRetrieveParams,
    "update_subscription": SubscriptionUpdateParams,
    "cancel_subscription": SubscriptionCancelParams,
    "resume_subscription": SubscriptionResumeParams,
    "create_product": ProductCreateParams,
    "list_products": ProductListParams,
    "retrieve_product": ProductRetrieveParams,
    "create_price": PriceCreateParams,
    "list_prices": PriceListParams,
    "retrieve_price": PriceRetrieveParams,
    "list_invoices": InvoiceListParams,
    "create_invoice_preview": InvoiceCreatePreviewParams,
    "retrieve_invoice": InvoiceRetrieveParams,
    "list_invoice_lines": InvoiceListLinesParams,
    "create_test_clock": TestClockCreateParams,
    "list_test_clocks": TestClockListParams,
    "retrieve_test_clock": TestClockRetrieveParams,
    "advance_test_clock": TestClockAdvanceParams,
    "delete_test_clock": TestClockDeleteParams,
    "list_events": EventListParams,
    "retrieve_event": EventRetrieveParams,
}

# `maxLength` of Stripe's OpenAPI spec (github.com/stripe/openapi, API 2026-10-28.endive) for
# parameters the SDK's docstrings give no limit; `*` is any index or key. Metadata: "up to 50
# keys, with key names up to 40 characters long and values up to 500 characters long" (API
# reference, Metadata), checked in `_metadata`.
LENGTH_LIMITS: dict[tuple[str, str], int] = {
    ("create_meter", "display_name"): 250,
    ("update_meter", "display_name"): 250,
    ("create_meter", "event_name"): 100,
    ("create_meter", "customer_mapping[event_payload_key]"): 100,
    ("create_meter", "value_settings[event_payload_key]"): 100,
    ("create_meter_event", "event_name"): 100,
    ("create_meter_event", "identifier"): 100,
    ("create_meter_event_stream", "events[*][event_name]"): 100,
    ("create_meter_event_stream", "events[*][identifier]"): 100,
}
_DOCSTRING_LIMIT = re.compile(r"up to \*?(\d+) characters", re.IGNORECASE)
_INTEGER = re.compile(r"-?\d+")
_METADATA_KEYS, _METADATA_KEY_LENGTH, _METADATA_VALUE_LENGTH = 50, 40, 500


def check_request(endpoint: str | None, params: dict[str, Any], *, form: bool) -> None:
    """Refuse what Stripe refuses for this endpoint; an endpoint without rules is a bug."""
    if endpoint is None:
        return  # no such route: the 404 follows
    if endpoint not in ENDPOINT_PARAMS:
        raise RuntimeError(f"no published parameter rules for the emulator view {endpoint}")
    kind = typed_dict(ENDPOINT_PARAMS[endpoint])
    _Checker(endpoint, ENDPOINT_PARAMS[endpoint], form).object(kind, params, "")
    if params.get("expand"):
        # Valid for Stripe, but answering unexpanded would be a shape Stripe never gives.
        raise invalid(
            "The Stripe emulator does not emulate expand (documented by Stripe; see "
            "stripe_emulator/README.md).",
            param="expand",
        )


def _path(parent: str, name: str) -> str:
    return f"{parent}[{name}]" if parent else name


def _pattern(path: str) -> str:
    return re.sub(r"\[\d+\]", "[*]", path)


class _Checker:
    def __init__(self, endpoint: str, params_type: type, form: bool) -> None:
        self.endpoint = endpoint
        self.params_type = params_type
        self.form = form

    def object(self, kind: Kind, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise invalid("Invalid object", param=path)
        for name in value:
            if name not in kind.fields:
                unknown = _path(path, name)
                raise invalid(f"Received unknown parameter: {unknown}", param=unknown)
        for name, (field_kind, required) in kind.fields.items():
            if name in value:
                self.value(field_kind, value[name], _path(path, name), kind.source, name)
            elif required:
                raise missing_param(_path(path, name))

    def value(self, kind: Kind, value: Any, path: str, owner: Any = None, name: str = "") -> None:
        error = self._mismatch(kind, value, path)
        if error is not None:
            raise invalid(error, param=path)
        if isinstance(value, str):
            self._length(value, path, owner, name)
        if name == "metadata" and isinstance(value, dict):
            self._metadata(value, path)

    def _mismatch(self, kind: Kind, value: Any, path: str) -> str | None:
        """Why `value` is not of `kind` (None if it is); nested objects raise themselves."""
        if kind.name == "union":
            return self._union(kind, value, path)
        if kind.name == "object":
            if not isinstance(value, dict):
                return "Invalid object"
            self.object(kind, value, path)
            return None
        if kind.name == "map":
            if not isinstance(value, dict):
                return "Invalid object"
            assert kind.items is not None
            for key, item in value.items():
                self.value(kind.items, item, _path(path, str(key)))
            return None
        if kind.name == "list":
            if self.form and value == "":
                return None  # an empty form value clears a list, as Stripe reads it
            if not isinstance(value, list):
                return "Invalid array"
            assert kind.items is not None
            for index, item in enumerate(value):
                self.value(kind.items, item, _path(path, str(index)))
            return None
        return self._scalar(kind, value, path)

    def _union(self, kind: Kind, value: Any, path: str) -> str | None:
        """Any option may match; otherwise the error of the option shaped like the value."""
        errors: list[StripeAPIError | str] = []
        for option in kind.options:
            try:
                reason = self._mismatch(option, value, path)
            except StripeAPIError as nested:
                errors.append(nested)
                continue
            if reason is None:
                return None
            errors.append(reason)
        nested_errors = [e for e in errors if isinstance(e, StripeAPIError)]
        if nested_errors:
            raise nested_errors[0]
        enums = [o for o in kind.options if o.name == "enum" and o.values != ("",)]
        if enums and isinstance(value, str):
            return _enum_message(path, enums[0].values)
        return str(errors[-1])

    def _scalar(self, kind: Kind, value: Any, path: str) -> str | None:
        if kind.name == "any":
            return None
        if kind.name == "enum":
            return None if value in kind.values else _enum_message(path, kind.values)
        if kind.name == "str":
            return None if isinstance(value, str) else "Invalid string"
        if kind.name == "bool":
            ok = value in ("true", "false") if self.form else isinstance(value, bool)
            return None if ok else f"Invalid boolean: {value}"
        if kind.name == "int":
            if self.form:
                ok = isinstance(value, str) and _INTEGER.fullmatch(value) is not None
            else:
                ok = isinstance(value, int) and not isinstance(value, bool)
            return None if ok else f"Invalid integer: {value}"
        if kind.name == "float":
            return None if _is_decimal(value) else f"Invalid decimal: {value}"
        return f"Invalid {path}"

    def _length(self, value: str, path: str, owner: Any, name: str) -> None:
        limit = LENGTH_LIMITS.get((self.endpoint, _pattern(path)))
        if limit is None and owner is not None:
            limit = _docstring_limit(owner, name)
        if limit is not None and len(value) > limit:
            raise invalid(
                f"Invalid string: {value[:50]}...; must be at most {limit} characters", param=path
            )

    @staticmethod
    def _metadata(metadata: dict[str, Any], path: str) -> None:
        if len(metadata) > _METADATA_KEYS:
            raise invalid(f"Invalid {path}: can have at most {_METADATA_KEYS} keys", param=path)
        for key, item in metadata.items():
            if len(str(key)) > _METADATA_KEY_LENGTH:
                raise invalid(
                    f"Metadata keys can have up to {_METADATA_KEY_LENGTH} characters; "
                    f"{key[:50]} is too long",
                    param=_path(path, str(key)),
                )
            if isinstance(item, str) and len(item) > _METADATA_VALUE_LENGTH:
                raise invalid(
                    f"Metadata values can have up to {_METADATA_VALUE_LENGTH} characters, but "
                    f"the value for {key} is too long",
                    param=_path(path, str(key)),
                )


def _is_decimal(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        Decimal(str(value))
    except InvalidOperation:
        return False
    return True


def _enum_message(path: str, values: tuple[Any, ...]) -> str:
    listed = [str(v) for v in values if v != ""] or ['""']
    choices = ", ".join(listed[:-1]) + f", or {listed[-1]}" if len(listed) > 1 else listed[0]
    return f"Invalid {path}: must be one of {choices}"


def _docstring_limit(owner: type, name: str) -> int | None:
    """ "This may be up to 150 characters" in the SDK's docstring of the parameter."""
    doc = _attribute_docs(owner).get(name)
    match = _DOCSTRING_LIMIT.search(doc or "")
    return int(match.group(1)) if match else None


_DOCS: dict[type, dict[str, str]] = {}


def _attribute_docs(owner: type) -> dict[str, str]:
    """The string literal under each annotated name in the SDK's generated class source."""
    if owner not in _DOCS:
        docs: dict[str, str] = {}
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(owner)))
        except (OSError, TypeError):
            tree = None
        body = tree.body[0].body if tree and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = after.value.value
        _DOCS[owner] = docs
    return _DOCS[owner]
