"""Markdown tables for Dagster metadata, the one way every asset and check renders rows.

The UI renders `MetadataValue.md` as a table; cells are flattened to one line and cut, so a long
Stripe message or a stray `|` can never break the table an operator reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

CELL_LIMIT = 200


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "/").replace("\n", " ")[:CELL_LIMIT]


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[str] = ()
) -> dg.MetadataValue:
    """A table with `header`, one line per row; columns named in `numeric` align right."""
    rule = "|" + "".join("---:|" if name in numeric else "---|" for name in header)
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))
