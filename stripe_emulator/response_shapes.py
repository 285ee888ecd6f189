"""Every response the emulator gives, checked against the published shape of its object.

The shape of an object is the resource class the pinned stripe SDK generates from Stripe's
OpenAPI spec for its API version (2026-10-28.endive), found the way the SDK itself finds it
(`stripe._object_classes`, by the object's `object` field). A response is wrong when it:
- has a field the class does not declare (a shape Stripe never renders),
- lacks a field the class declares non-`Optional`, or has it `null`,
- has a value of another type or outside the field's enum,
- lacks a field Stripe always renders for this version: every field a resource declares,
  except those in `ABSENT_UNLESS_ASKED` (rendered only when expanded or included, or only on
  deleted objects); a nested part of a resource must carry its non-`Optional` fields.
Nested objects are checked the same way; an event's `data.object` by its own `object`.

`check_api_version` is the other half of versioning: the emulator renders only that version, so
a request asking for another one is refused rather than answered in a shape it did not ask for.
"""

from __future__ import annotations

from typing import Any, cast

from stripe._object_classes import get_object_class
from stripe._stripe_object import StripeObject
from stripe.events._event_classes import get_v2_event_class

from stripe_emulator.errors import invalid
from stripe_emulator.request_rules import ENDPOINT_PARAMS
from stripe_emulator.sdk_types import API_VERSION, Kind, resource, typed_dict

# Fields Stripe leaves out of an object unless asked (`expand[]`/`include[]`, per the API
# reference of each object) or that only a deleted object carries.
ABSENT_UNLESS_ASKED: dict[str, frozenset[str]] = {
    "customer": frozenset(
        {"cash_balance", "deleted", "invoice_credit_balance", "sources", "subscriptions"}
        | {"tax", "tax_ids"}
    ),
    "subscription_item": frozenset({"deleted"}),
    "test_helpers.test_clock": frozenset({"deleted"}),
    "product": frozenset({"deleted"}),
    "price": frozenset({"currency_options", "deleted", "tiers"}),
    "plan": frozenset({"deleted", "tiers"}),
    "invoice": frozenset({"confirmation_secret", "deleted", "payments"}),
    # `account` and `context` are set only on events of connected accounts and organizations.
    "event": frozenset({"account", "context"}),
}


# The objects the emulator renders (their classes pull in every class they embed).
_RENDERED = (
    "customer",
    "billing.meter",
    "billing.meter_event",
    "billing.meter_event_adjustment",
    "billing.meter_event_summary",
    "v2.billing.meter_event_session",
    "product",
    "price",
    "subscription",
    "invoice",
    "test_helpers.test_clock",
    "event",
)


def warm_up_shapes() -> None:
    """Read every published type the emulator serves now rather than on first use."""
    for view in ENDPOINT_PARAMS:
        typed_dict(ENDPOINT_PARAMS[view])
    for name in _RENDERED:
        cls = get_object_class("V2" if name.startswith("v2.") else "V1", name)
        resource(cls)


def check_api_version(requested: str | None) -> None:
    """No header is the account's default, which here is the pinned version."""
    if requested is not None and requested != API_VERSION:
        raise invalid(
            f"This emulator renders objects only in API version {API_VERSION} (the "
            f"version the pinned stripe SDK sends); it cannot answer in {requested}.",
            param="Stripe-Version",
        )


def response_violations(body: Any) -> list[str]:
    """Every way `body` departs from its published shape (empty when it matches)."""
    violations: list[str] = []
    _top_level(body, "", violations)
    return violations


def _top_level(body: Any, path: str, violations: list[str]) -> None:
    if not isinstance(body, dict) or not body:
        return  # `{}` is the documented answer of the v2 meter event stream
    if body.get("object") == "list" or body.get("object") == "search_result":
        for index, item in enumerate(body.get("data", [])):
            _top_level(item, f"{path}data[{index}].", violations)
        return
    _object(body, path, violations)


def _class_of(body: dict[str, Any]) -> type[StripeObject] | None:
    name = body.get("object")
    if not isinstance(name, str):
        return None
    if name == "v2.core.event" and isinstance(body.get("type"), str):
        # A v2 event's shape is its type's (its `data` and `related_object`), as the SDK reads it.
        return cast("type[StripeObject]", get_v2_event_class(body["type"]))
    cls = get_object_class("V2" if name.startswith("v2.") else "V1", name)
    return None if cls is StripeObject else cls


def _object(body: dict[str, Any], path: str, violations: list[str]) -> None:
    if body.get("deleted") is True:
        # The published `deleted_<object>` shape: the id, the object name and `deleted`.
        if set(body) != {"id", "object", "deleted"}:
            violations.append(f"{path or '.'}: a deleted object has only id, object, deleted")
        return
    cls = _class_of(body)
    if cls is None:
        violations.append(f"{path or '.'}: no published object {body.get('object')!r}")
        return
    _fields(resource(cls), body, path, violations, str(body.get("object")), complete=True)
    data = body.get("data")
    if body.get("object") == "event" and isinstance(data, dict):
        inner = data.get("object")
        if isinstance(inner, dict):
            _object(inner, f"{path}data.object.", violations)


def _fields(
    kind: Kind,
    body: dict[str, Any],
    path: str,
    violations: list[str],
    object_name: str,
    *,
    complete: bool,
) -> None:
    """`complete`: a resource renders every declared field; a nested part of one may leave
    out the optional fields that do not apply (`issuer.account` when `type=self`)."""
    absent_ok = ABSENT_UNLESS_ASKED.get(object_name, frozenset())
    for name in body:
        if name not in kind.fields:
            violations.append(f"{path}{name}: not a field of {_title(kind)}")
    for name, (field_kind, required) in kind.fields.items():
        if name not in body:
            if (complete or required) and name not in absent_ok:
                violations.append(f"{path}{name}: missing from {_title(kind)}")
            continue
        value = body[name]
        if value is None:
            if required:
                violations.append(f"{path}{name}: null, but {_title(kind)} declares it non-null")
            continue
        _value(field_kind, value, f"{path}{name}", violations)


def _value(kind: Kind, value: Any, path: str, violations: list[str]) -> None:
    reason = _mismatch(kind, value, path, violations)
    if reason is not None:
        violations.append(f"{path}: {reason}")


def _mismatch(kind: Kind, value: Any, path: str, violations: list[str]) -> str | None:
    """Why `value` is not of `kind`; nested objects add their own violations."""
    if value is None:
        return None if kind.name in ("null", "any") else "null"
    if kind.name == "union":
        plain = [o for o in kind.options if o.name not in ("object", "stripe_list", "null")]
        if any(_mismatch(option, value, path, []) is None for option in plain):
            return None
        nested = [o for o in kind.options if o.name in ("object", "stripe_list")]
        if nested and isinstance(value, dict):
            return _mismatch(nested[0], value, path, violations)
        return f"{value!r} is none of {', '.join(o.name for o in kind.options)}"
    if kind.name == "object":
        if not isinstance(value, dict):
            return f"{value!r} is not an object"
        cls = _class_of(value)
        if cls is not None and kind.source is not None and issubclass(cls, kind.source):
            _object(value, f"{path}.", violations)
        else:
            _fields(kind, value, f"{path}.", violations, "", complete=False)
        return None
    if kind.name == "stripe_list":
        if not isinstance(value, dict) or value.get("object") != "list":
            return "not a list object"
        assert kind.items is not None
        for index, item in enumerate(value.get("data", [])):
            _value(kind.items, item, f"{path}.data[{index}]", violations)
        return None
    if kind.name == "list":
        if not isinstance(value, list):
            return f"{value!r} is not an array"
        assert kind.items is not None
        for index, item in enumerate(value):
            _value(kind.items, item, f"{path}[{index}]", violations)
        return None
    if kind.name == "map":
        if not isinstance(value, dict):
            return f"{value!r} is not a map"
        assert kind.items is not None
        for key, item in value.items():
            _value(kind.items, item, f"{path}.{key}", violations)
        return None
    return _scalar(kind, value)


def _scalar(kind: Kind, value: Any) -> str | None:
    checks = {
        "any": True,
        "enum": value in kind.values,
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "null": False,
    }
    if checks.get(kind.name, False):
        return None
    if kind.name == "enum":
        return f"{value!r} is not one of {', '.join(map(str, kind.values))}"
    return f"{value!r} is not {kind.name}"


def _title(kind: Kind) -> str:
    return getattr(kind.source, "__qualname__", "object")
