"""Stripe's published types, read from the pinned stripe SDK (16.1.0, API 2026-10-28.endive).

stripe-python's params TypedDicts and resource classes are generated from Stripe's OpenAPI
spec for the SDK's API version, so they are the spec, kept current by Stripe and already a
dependency. This module turns their annotations into a small type algebra (`Kind`) that the
request rules (request_rules.py) and the response shapes (response_shapes.py) both walk; it
knows nothing about any one endpoint.

Annotations are read, never trusted to `typing.get_type_hints` (the SDK hides most referenced
classes behind `TYPE_CHECKING`): a forward reference is evaluated against the defining module,
the enclosing resource class (nested classes) and the SDK's public names.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import stripe
import typing_extensions
from stripe._expandable_field import ExpandableField
from stripe._list_object import ListObject
from stripe._request_options import RequestOptions
from stripe._stripe_object import StripeObject, UntypedStripeObject

# What requirements.lock pins (a test holds the installed SDK to it, so an upgrade is seen).
PINNED_SDK = "16.1.0"
PINNED_API_VERSION = "2026-10-28.endive"
# The one version the emulator renders: the one whose types it reads, which the SDK also sends.
API_VERSION: str = stripe.api_version


@dataclass(frozen=True)
class Kind:
    """One published type. `name` is one of: str, int, float, bool, enum, list, map, object,
    union, any, null, stripe_list. `fields` maps a name to (kind, required) for objects."""

    name: str
    values: tuple[Any, ...] = ()
    items: Kind | None = None
    options: tuple[Kind, ...] = ()
    source: Any = None
    fields: dict[str, tuple[Kind, bool]] = field(default_factory=dict, compare=False, hash=False)


ANY = Kind("any")
NULL = Kind("null")
_SCALARS = {str: Kind("str"), int: Kind("int"), float: Kind("float"), bool: Kind("bool")}
_REQUEST_OPTION_KEYS = frozenset(RequestOptions.__annotations__)
# Every TypedDict and resource class read so far (reading is not free, and classes are cyclic).
_KNOWN: dict[type, Kind] = {}


class _Names(dict[str, Any]):
    """Names for `eval`: a miss falls back to the module's `TYPE_CHECKING` imports."""

    def __init__(self, names: dict[str, Any], hidden: dict[str, tuple[str, str]]) -> None:
        super().__init__(names)
        self._hidden = hidden

    def __missing__(self, name: str) -> Any:
        if name not in self._hidden:
            raise KeyError(name)
        module, attribute = self._hidden[name]
        return getattr(importlib.import_module(module), attribute)


@cache
def _hidden_imports(module_name: str) -> dict[str, tuple[str, str]]:
    """`from stripe.x import Y` statements under `if TYPE_CHECKING:` in an SDK module."""
    source = inspect.getsource(sys.modules[module_name])
    hidden: dict[str, tuple[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                hidden[alias.asname or alias.name] = (node.module, alias.name)
    return hidden


def _namespace(owner: type) -> _Names:
    names: dict[str, Any] = {**vars(typing), **vars(typing_extensions)}
    names.update(vars(sys.modules[owner.__module__]))
    for klass in reversed(owner.__mro__):
        names.update({k: v for k, v in vars(klass).items() if isinstance(v, type)})
    outer = owner.__qualname__.split(".")
    module = sys.modules[owner.__module__]
    node: Any = module
    for part in outer[:-1]:
        node = getattr(node, part)
        names.update({k: v for k, v in vars(node).items() if isinstance(v, type)})
    names["ListObject"] = ListObject
    names["ExpandableField"] = ExpandableField
    names["UntypedStripeObject"] = UntypedStripeObject
    return _Names(names, _hidden_imports(owner.__module__))


def _evaluate(annotation: Any, owner: type) -> Any:
    if isinstance(annotation, str):
        # The SDK's own annotation source, evaluated like `typing.get_type_hints` would.
        return _evaluate(eval(annotation, {}, _namespace(owner)), owner)
    if isinstance(annotation, typing.ForwardRef):
        return _evaluate(annotation.__forward_arg__, owner)
    return annotation


def kind_of(annotation: Any, owner: type) -> tuple[Kind, bool]:
    """The kind of one annotation, and whether it is required (not `NotRequired`)."""
    annotation = _evaluate(annotation, owner)
    origin = typing.get_origin(annotation)
    if origin in (typing.NotRequired, typing_extensions.NotRequired):
        return kind_of(typing.get_args(annotation)[0], owner)[0], False
    return _kind(annotation, owner), True


def _kind(annotation: Any, owner: type) -> Kind:
    annotation = _evaluate(annotation, owner)
    if annotation is type(None) or annotation is None:
        return NULL
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if annotation is Any:
        return ANY
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return Kind("enum", values=args)
    if origin in (typing.Union, types.UnionType):
        return _union([_kind(arg, owner) for arg in args])
    if origin in (list, typing.List):  # noqa: UP006 (the SDK's spelling)
        return Kind("list", items=_kind(args[0], owner))
    if origin in (dict, typing.Dict, typing.Mapping):  # noqa: UP006
        return Kind("map", items=_kind(args[1], owner))
    if origin is UntypedStripeObject:
        return Kind("map", items=_kind(args[0], owner) if args else ANY)
    if origin is ListObject:
        return Kind("stripe_list", items=_kind(args[0], owner))
    if origin is ExpandableField:
        return _union([_SCALARS[str], _kind(args[0], owner)])
    if annotation is UntypedStripeObject:
        return Kind("map", items=ANY)
    if isinstance(annotation, type) and typing_extensions.is_typeddict(annotation):
        return typed_dict(annotation)
    if isinstance(annotation, type) and issubclass(annotation, StripeObject):
        return resource(annotation)
    return ANY


def _union(options: list[Kind]) -> Kind:
    flat: list[Kind] = []
    for option in options:
        flat.extend(option.options if option.name == "union" else (option,))
    # The SDK spells an enum `Literal[...]|str` so that new values do not break old clients;
    # the published enum is the literal part (`Literal['']|str` is an emptyable string).
    if any(o.name == "enum" and o.values != ("",) for o in flat):
        flat = [o for o in flat if o.name != "str"]
    return flat[0] if len(flat) == 1 else Kind("union", options=tuple(flat))


def typed_dict(cls: type) -> Kind:
    """A params TypedDict: its keys (minus the SDK's request options) and which are required."""
    if cls in _KNOWN:
        return _KNOWN[cls]
    kind = _KNOWN[cls] = Kind("object", source=cls)
    annotations: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        annotations.update(vars(klass).get("__annotations__", {}))
    for name, annotation in annotations.items():
        if name in _REQUEST_OPTION_KEYS:
            continue
        kind.fields[name] = kind_of(annotation, cls)
    return kind


def resource(cls: type) -> Kind:
    """A response class: its attributes; an attribute is required unless `Optional`.

    Registered before its attributes are read: resources refer to each other in cycles."""
    if cls in _KNOWN:
        return _KNOWN[cls]
    kind = _KNOWN[cls] = Kind("object", source=cls)
    for klass in reversed(cls.__mro__):
        if not issubclass(klass, StripeObject) or klass is StripeObject:
            continue
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if name.startswith("_") or name.isupper():
                continue
            if typing.get_origin(_evaluate(annotation, klass)) is typing.ClassVar:
                continue
            attribute = _kind(annotation, klass)
            nullable = attribute is NULL or any(o is NULL for o in attribute.options)
            kind.fields[name] = (attribute, not nullable)
    return kind
