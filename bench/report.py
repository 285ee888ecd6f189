"""Re-render RESULTS.md sections from the JSON full runs left in bench/out/.

    python -m bench.report

Useful after changing how a table is laid out: the figures stay those of the recorded run.
"""

from __future__ import annotations

import importlib
import json

from bench.common import OUT_DIR, record

BENCHMARKS = ("aggregation", "reporting", "receiver", "backfill")


def main() -> None:
    for name in BENCHMARKS:
        path = OUT_DIR / f"{name}.json"
        if not path.exists():
            print(f"{name}: no {path.name}, skipped")
            continue
        data = json.loads(path.read_text())
        section = importlib.import_module(f"bench.{name}").render(data)
        record(name, data, section, quick=False)


if __name__ == "__main__":
    main()
