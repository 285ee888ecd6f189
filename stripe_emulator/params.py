"""Parameter rules several resources share: unknown names, booleans, metadata merging."""

from __future__ import annotations

from typing import Any

from stripe_emulator.errors import invalid


def boolean(params: dict[str, Any], name: str) -> bool:
    raw = params[name]
    if raw not in ("true", "false", True, False):
        raise invalid(f"Invalid boolean: {raw}", param=name)
    return raw in ("true", True)


def reject_unemulated(params: dict[str, Any], emulated: set[str]) -> None:
    """A parameter Stripe documents (request_rules.py let it through) whose effect the emulator
    does not reproduce: a 400 saying so, never a silent no-op."""
    for name in params:
        if name not in emulated:
            raise invalid(
                f"The Stripe emulator does not emulate the parameter {name} (documented by "
                "Stripe; see stripe_emulator/README.md).",
                param=name,
            )


def merged_metadata(current: dict[str, str], update: Any) -> dict[str, str]:
    """Stripe merges metadata keys; an empty value deletes its key, an empty string all keys."""
    if update == "":
        return {}
    if not isinstance(update, dict):
        raise invalid("Invalid object", param="metadata")
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged
