"""Loaded at start-up by the Python processes FakeClock puts on its clock (PYTHONPATH).

libfaketime 0.9.10 (Debian 12) leaves CLOCK_MONOTONIC real when asked to
(FAKETIME_DONT_FAKE_MONOTONIC, needed because it does not intercept `sem_clockwait`, so with a
fake monotonic clock every `threading.Event.wait(timeout)` waits for years), but it still
rewrites the absolute monotonic deadline of `clock_nanosleep`, which `time.sleep` uses, into an
invalid one (EINVAL). `time.sleep` is therefore the same wait over `select`, whose timeout is
relative.
"""

from __future__ import annotations

import select
import time
from typing import SupportsIndex


def _sleep(length: float | SupportsIndex) -> None:
    seconds = float(length)
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
