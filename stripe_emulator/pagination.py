"""Stripe's list parameters: integer query params and cursor pagination."""

from __future__ import annotations

from typing import Any

from stripe_emulator.errors import invalid, missing_param


def int_param(params: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise missing_param(name)
        return None
    try:
        return int(str(raw))
    except ValueError:
        raise invalid(f"Invalid integer: {raw}", param=name) from None


def paginate(items: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
    """Stripe's cursor pagination, so the SDK's `auto_paging_iter` walks every page."""
    limit = int_param(params, "limit", required=False) or 10
    if not 1 <= limit <= 100:
        raise invalid("Invalid limit: must be between 1 and 100.", param="limit")
    ids = [item["id"] for item in items]
    for cursor in ("starting_after", "ending_before"):
        if params.get(cursor) and params[cursor] not in ids:
            raise invalid(f"Invalid {cursor} id: {params[cursor]}", param=cursor)
    if params.get("starting_after"):
        remaining = items[ids.index(params["starting_after"]) + 1 :]
        page = remaining[:limit]
    elif params.get("ending_before"):
        remaining = items[: ids.index(params["ending_before"])]
        page = remaining[-limit:]
    else:
        remaining = items
        page = remaining[:limit]
    return {"object": "list", "data": page, "has_more": len(remaining) > limit, "url": url}
