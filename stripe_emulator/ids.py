"""Stripe-shaped random object ids (`cus_…`, `mtr_test_…`, `evt_test_…`)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


# The largest multiple of the alphabet's size that fits a byte: bytes at or above it are
# dropped, so every character stays equally likely.
_USABLE = 256 - 256 % len(_ALPHABET)


def new_id(prefix: str, length: int = 24) -> str:
    """`prefix` plus `length` random letters and digits, from one `os.urandom` read: one read
    per character (`secrets.choice`) made ids a visible share of each request's time."""
    chars: list[str] = []
    while len(chars) < length:
        chars += [_ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(length) if b < _USABLE]
    return prefix + "".join(chars[:length])
