"""Stream generated demo rows into Postgres with COPY, in one all-or-nothing transaction.

The load is **all-or-nothing**, not resumable: one transaction locks the four application
tables (ACCESS EXCLUSIVE, so no writer slips in between the emptiness check and the load),
refuses unless they are empty or `replace` is set, truncates them (RESTART IDENTITY, so the
readings' database-generated ids are deterministic too), drops the readings' secondary indexes
and foreign key, COPYs every row, recreates the dropped objects from the definitions read out of
the catalog (so the schema ends exactly as it began), moves the identity sequences past the
explicit ids and ANALYZEs. A failure or Ctrl-C anywhere rolls all of it back, indexes included.

Why it is fast and flat: rows are generated lazily into a file-like object that `copy_expert`
pulls from, so memory holds one buffer, not the data set (readings in COPY's binary format, the
small tables as text); indexes are built once at the end
instead of row by row; and COPY ... FREEZE (allowed because the table was truncated in this
transaction) writes rows already frozen and all-visible, so the first index-only scan or vacuum
after the seed does not rewrite the whole table.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from tqdm import tqdm

from billing_demo.seed import generator
from billing_demo.seed.generator import DAY_US, ReadingRow, SeedOptions
from billing_pipeline.db.engine import make_engine

APP_TABLES = ("organizations", "subscriptions", "sensors", "temperature_readings")
READINGS = "temperature_readings"
COPY_BUFFER_BYTES = 1 << 20
# COPY BINARY: signature, flags, header extension length; a row of 4 fields, each
# (length, value); a -1 field count ends the data. Timestamps are int64 microseconds since
# 2000-01-01 UTC.
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_BINARY_TRAILER = struct.pack(">h", -1)
_BINARY_READING = struct.Struct(">hiqiqidiq")
_POSTGRES_EPOCH_US = generator.to_us(datetime(2000, 1, 1, tzinfo=UTC))


class SeedRefusedError(RuntimeError):
    """The application tables already hold data and `replace` was not requested."""


@dataclass(frozen=True)
class SeedSummary:
    """What was loaded: row counts per table and the seeded day range."""

    organizations: int
    subscriptions: int
    sensors: int
    readings: int
    late_readings: int
    start_date: str
    end_date: str

    @property
    def free_organizations(self) -> int:
        return self.organizations - self.subscriptions


class _ChunkStream:
    """A read-only binary file over an iterator of chunks, produced only as COPY asks for them."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        parts, length = [self._buffer], len(self._buffer)
        while size < 0 or length < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            length += len(chunk)
        data = b"".join(parts)
        if size < 0:
            self._buffer = b""
            return data
        self._buffer = data[size:]
        return data[:size]


def _copy_value(value: object) -> str:
    """One field in COPY's text format: NULL as \\N, datetimes in ISO 8601, text escaped."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _copy_lines(rows: Iterable[tuple[object, ...]]) -> Iterator[bytes]:
    for row in rows:
        yield ("\t".join(map(_copy_value, row)) + "\n").encode()


class _ReadingChunks:
    """Readings in COPY's binary format, counting rows and late rows and advancing a progress bar.

    Binary, because the text format's timestamps had to be formatted in Python and parsed by the
    server, which dominated a load; here a row is one `struct.pack` of integers and a double.
    """

    def __init__(self, batches: Iterator[list[ReadingRow]], advance: Callable[[int], Any]) -> None:
        self._batches = batches
        self._advance = advance
        self.rows = 0
        self.late = 0

    def __iter__(self) -> Iterator[bytes]:
        pack, offset = _BINARY_READING.pack, _POSTGRES_EPOCH_US
        yield _BINARY_HEADER
        for batch in self._batches:
            self.late += sum(
                1 for _, recorded, _, ingested in batch if ingested - recorded >= DAY_US
            )
            self.rows += len(batch)
            self._advance(len(batch))
            yield b"".join(
                [
                    pack(4, 8, sensor_id, 8, recorded - offset, 8, celsius, 8, ingested - offset)
                    for sensor_id, recorded, celsius, ingested in batch
                ]
            )
        yield _BINARY_TRAILER


def _copy(
    cursor: Any,
    table: str,
    columns: tuple[str, ...],
    chunks: Iterable[bytes],
    *,
    binary: bool = False,
) -> None:
    fmt = "FORMAT binary, " if binary else ""
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH ({fmt}FREEZE)"
    cursor.copy_expert(sql, _ChunkStream(iter(chunks)), size=COPY_BUFFER_BYTES)


def _lock_and_empty(cursor: Any, replace: bool) -> None:
    """Lock the app tables, refuse if they hold rows (unless replacing), then truncate them."""
    tables = ", ".join(APP_TABLES)
    cursor.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
    occupied = []
    for table in APP_TABLES:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
        if cursor.fetchone()[0]:
            occupied.append(table)
    if occupied and not replace:
        raise SeedRefusedError(
            f"the database already has data in {', '.join(occupied)}; "
            "pass --replace (replace=True) to truncate the application tables and seed anew"
        )
    cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY")


def _drop_reading_constraints(cursor: Any) -> list[str]:
    """Drop the readings' secondary indexes and foreign keys; return the SQL that restores them.

    Definitions come from the catalog, not the models, so whatever the migrations created is
    put back verbatim. The primary key stays: appending increasing ids to it is cheap.
    """
    cursor.execute(
        """
        SELECT x.indexrelid::regclass::text, pg_get_indexdef(x.indexrelid)
        FROM pg_index x
        WHERE x.indrelid = %(table)s::regclass
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
        ORDER BY 1
        """,
        {"table": READINGS},
    )
    indexes = cursor.fetchall()
    cursor.execute(
        """
        SELECT quote_ident(conname), pg_get_constraintdef(oid)
        FROM pg_constraint
        WHERE conrelid = %(table)s::regclass AND contype = 'f'
        ORDER BY 1
        """,
        {"table": READINGS},
    )
    foreign_keys = cursor.fetchall()
    for name, _ in foreign_keys:
        cursor.execute(f"ALTER TABLE {READINGS} DROP CONSTRAINT {name}")
    for name, _ in indexes:
        cursor.execute(f"DROP INDEX {name}")
    restore = [definition for _, definition in indexes]
    restore += [f"ALTER TABLE {READINGS} ADD CONSTRAINT {name} {fk}" for name, fk in foreign_keys]
    return restore


def _advance_identities(cursor: Any) -> None:
    """Move each identity past the explicit ids, so the application's next insert succeeds."""
    for table in APP_TABLES:
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence(%(table)s, 'id'), coalesce(max(id), 0) + 1,"
            f" false) FROM {table}",
            {"table": table},
        )


def _status(enabled: bool, message: str) -> None:
    if enabled:
        tqdm.write(message, file=sys.stderr)


def _load(cursor: Any, options: SeedOptions, replace: bool, progress: bool) -> SeedSummary:
    _lock_and_empty(cursor, replace)
    orgs = list(generator.organizations(options))
    subs = list(generator.subscriptions(options, iter(orgs)))
    all_sensors = list(generator.sensors(options, iter(orgs)))
    _copy(
        cursor,
        "organizations",
        ("id", "name", "created_at"),
        _copy_lines((o.id, o.name, o.created_at) for o in orgs),
    )
    _copy(
        cursor,
        "subscriptions",
        ("id", "organization_id", "status", "started_at", "created_at", "updated_at"),
        _copy_lines(
            (s.id, s.organization_id, s.status, s.started_at, s.started_at, s.started_at)
            for s in subs
        ),
    )
    _copy(
        cursor,
        "sensors",
        ("id", "organization_id", "serial_number", "created_at", "deactivated_at"),
        _copy_lines(
            (s.id, s.organization_id, s.serial_number, s.created_at, s.deactivated_at)
            for s in all_sensors
        ),
    )
    restore = _drop_reading_constraints(cursor)
    total = generator.expected_readings(options, all_sensors)
    with tqdm(
        total=total, unit="reading", unit_scale=True, file=sys.stderr, disable=not progress
    ) as bar:
        chunks = _ReadingChunks(generator.reading_batches(options, all_sensors), bar.update)
        columns = ("sensor_id", "recorded_at", "celsius", "ingested_at")
        _copy(cursor, READINGS, columns, chunks, binary=True)
        bar.total = bar.n  # the total was an estimate; end the bar at 100%
    _status(progress, "rebuilding reading indexes and foreign key…")
    cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
    for statement in restore:
        cursor.execute(statement)
    _advance_identities(cursor)
    _status(progress, "analyzing…")
    cursor.execute(f"ANALYZE {', '.join(APP_TABLES)}")
    return SeedSummary(
        organizations=len(orgs),
        subscriptions=len(subs),
        sensors=len(all_sensors),
        readings=chunks.rows,
        late_readings=chunks.late,
        start_date=options.start_date.isoformat(),
        end_date=options.end_date.isoformat(),
    )


def seed_database(
    engine_or_url: Engine | str | URL,
    options: SeedOptions,
    *,
    replace: bool = False,
    progress: bool = False,
) -> SeedSummary:
    """Load the demo data set described by `options`; all or nothing (see the module docstring).

    Raises `SeedRefusedError` when the application tables hold data and `replace` is false.
    The schema must already be migrated. `progress` draws a tqdm bar on stderr.
    """
    owned = not isinstance(engine_or_url, Engine)
    engine = engine_or_url if isinstance(engine_or_url, Engine) else make_engine(engine_or_url)
    try:
        connection = engine.raw_connection()
        try:
            with closing(connection.cursor()) as cursor:
                summary = _load(cursor, options, replace, progress)
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()
    finally:
        if owned:
            engine.dispose()
    return summary
