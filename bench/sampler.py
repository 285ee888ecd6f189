"""A wall-clock stack sampler for the threads of this process, for profiling the sender.

py-spy is not installed here and cProfile only sees the thread it was enabled in, while the
sender's work happens on a pool of threads. Every `interval` seconds this takes
`sys._current_frames()` and counts, for the threads whose names start with a prefix, the
innermost frame (where each thread is: running or blocked) and every function on the stack
(inclusive). A thread blocked on a socket shows its Python frame above the C call, so the
figures are shares of wall time, not of CPU.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path
from types import FrameType, TracebackType

_REPO = str(Path(__file__).resolve().parents[1]) + "/"


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("site-packages/", "lib/python3.11/", _REPO):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_name}"


class StackSampler:
    def __init__(self, prefixes: tuple[str, ...], interval: float = 0.005) -> None:
        self.prefixes = prefixes
        self.interval = interval
        self.samples = 0
        self.leaf: Counter[str] = Counter()
        self.inclusive: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if not names.get(ident, "").startswith(self.prefixes):
                    continue
                self.samples += 1
                self.leaf[_where(frame)] += 1
                seen: set[str] = set()
                current: FrameType | None = frame
                while current is not None:
                    seen.add(_where(current))
                    current = current.f_back
                self.inclusive.update(seen)

    def report(self, top: int = 25, own_code: str = "billing_pipeline/") -> str:
        """The busiest innermost frames, and the project's own functions by inclusive share."""
        total = max(1, self.samples)
        lines = [
            f"{self.samples} thread samples every {self.interval * 1000:.0f} ms",
            "",
            "innermost:",
        ]
        lines += [f"  {n / total:6.1%}  {where}" for where, n in self.leaf.most_common(top)]
        lines += ["", f"inclusive ({own_code}):"]
        own = [(w, n) for w, n in self.inclusive.most_common() if w.startswith(own_code)]
        lines += [f"  {n / total:6.1%}  {where}" for where, n in own[:top]]
        return "\n".join(lines)
