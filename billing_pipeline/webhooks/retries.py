"""The inbox's retry policy: how often and how long a failing event is tried before it dies.

Waits double from FIRST_RETRY_DELAY: 45 s, 1.5, 3, 6 and 12 minutes, so the MAX_ATTEMPTS-th (6th)
failure, and with it the dead letter, comes no sooner than DEAD_LETTER_AFTER (23 min 15 s) after
the first. Linking (`linking.CHECKOUT_WAIT`) waits for a checkout within that time.
"""

from __future__ import annotations

from datetime import timedelta

MAX_ATTEMPTS = 6
FIRST_RETRY_DELAY = timedelta(seconds=45)


def retry_delay(attempts: int) -> timedelta:
    """How long an event waits after its `attempts`-th failure: 45 s, doubling each time."""
    return FIRST_RETRY_DELAY * 2 ** (attempts - 1)


# The least time between an event's first failure and its dead letter.
DEAD_LETTER_AFTER = sum((retry_delay(n) for n in range(1, MAX_ATTEMPTS)), timedelta())
