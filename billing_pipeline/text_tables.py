"""Plain-text tables for the terminal, the one way CLI commands print rows.

Columns are as wide as their widest cell; numbers align right, as an operator compares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value).replace("\n", " ")


def text_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[str] = ()
) -> str:
    """`header` and `rows` aligned in columns; datetimes in UTC to the second, None as `-`."""
    cells = [list(header), *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    right = [name in numeric for name in header]

    def line(values: Sequence[str]) -> str:
        parts = (
            value.rjust(width) if is_right else value.ljust(width)
            for value, width, is_right in zip(values, widths, right, strict=True)
        )
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(values) for values in cells[1:])])
