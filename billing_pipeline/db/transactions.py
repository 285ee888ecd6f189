"""One way for a function to run in its own transaction or in the caller's.

Given an engine, `in_transaction` opens and commits a transaction as `engine.begin()` does; given
a connection, it uses the transaction the caller holds, so the caller decides the outcome. The dry
run relies on it: it plans through the real functions inside a transaction it rolls back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine


@contextmanager
def in_transaction(bind: Engine | Connection) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.begin() as connection:
        yield connection
