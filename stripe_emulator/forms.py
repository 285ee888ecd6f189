"""Decoding of Stripe's v1 form encoding (`payload[value]=3`, `expand[0]=x`).

The SDK flattens nested dicts into bracketed keys and lists into indexed keys; the emulator must
rebuild the same nested structure Stripe's API sees, or payload key overrides and metadata would
silently be ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_KEY_PART = re.compile(r"\[([^\]]*)\]")


def split_key(key: str) -> list[str]:
    """`a[b][c]` -> ["a", "b", "c"]; a key without brackets stays whole."""
    head, bracket, _ = key.partition("[")
    if not bracket:
        return [key]
    return [head, *_KEY_PART.findall(key[len(head) :])]


def _listify(node: Any) -> Any:
    """Turn dicts keyed "0", "1", … into lists, the way Stripe reads indexed keys."""
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def decode_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild nested params from flat (key, value) pairs; later duplicates win, as in Stripe."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = split_key(key)
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    result = _listify(root)
    return result if isinstance(result, dict) else {}
