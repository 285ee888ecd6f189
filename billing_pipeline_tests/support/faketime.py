"""One movable clock for a process tree: Debian's libfaketime, and the emulator's offset clock.

Processes started with `FakeClock.env()` (the Dagster code server, daemon, webserver and every
run worker they spawn, which inherit the environment) read the time from libfaketime, which
takes an offset from real time (`+N` / `-N` seconds) from a file it re-reads every second, with
the monotonic clock left real (faketime_site/sitecustomize.py says why and what that needs). The
Stripe emulator runs in the test process on its own offset clock; `move_to` sets both to the
same instant, and both keep ticking at real speed, so code that measures elapsed time still
sees time pass. PostgreSQL's `now()` is not moved: the pipeline's time decisions are made in
Python. Install with `apt-get install faketime` (.ci/run does).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from stripe_emulator.control import EmulatorControl

# Debian's multithreaded variant: the daemon and the run workers are multithreaded.
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
# Holds the sitecustomize.py that makes `time.sleep` work under libfaketime.
SITE = Path(__file__).with_name("faketime_site")
# How often processes re-read the offset; a move waits this long before anything relies on it.
REREAD_SECONDS = 1


@dataclass
class FakeClock:
    offset_file: Path
    emulator: EmulatorControl
    offset: int | None = None  # None until the first move

    def env(self) -> dict[str, str]:
        """The environment that puts a process (and its children) on this clock."""
        if not LIBFAKETIME.exists():
            raise RuntimeError(f"{LIBFAKETIME} is missing: apt-get install faketime")
        return {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(self.offset_file),
            "FAKETIME_CACHE_DURATION": str(REREAD_SECONDS),
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")])),
        }

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + (self.offset or 0), UTC)

    def move_to(self, at: datetime) -> None:
        """Set every clock to `at` (forwards only: Dagster's schedules and runs expect it)."""
        offset = round(at.timestamp() - time.time())
        if self.offset is not None and offset < self.offset:
            raise ValueError(f"the clock only moves forwards: {at} is before {self.now()}")
        self.offset = offset
        staged = self.offset_file.with_suffix(".new")
        staged.write_text(f"{offset:+d}\n")
        os.replace(staged, self.offset_file)  # a reader never sees a half-written offset
        self.emulator.set_clock(time.time() + offset)
        time.sleep(REREAD_SECONDS + 0.5)
