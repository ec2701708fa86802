"""Driver-level statements for the inbox hot path (one round trip per batch, no ORM layers).

SQL is written once with `?` placeholders: they become $1, $2 … for asyncpg; datetimes become the text
format SQLAlchemy stores in SQLite, so rows written here read back through the models as usual.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.engine import make_url

from storage.db import PG_SERVER_SETTINGS, Database, async_url

Statement = tuple[str, list[Any]]


def _sqlite_param(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    return value


@functools.lru_cache(maxsize=1024)  # the hot statements are constant strings: number them once
def _numbered(sql: str) -> str:
    parts = sql.split("?")
    return "".join(f"{part}${n}" if n < len(parts) else part for n, part in enumerate(parts, start=1))


def placeholders(count: int) -> str:
    """`?, ?, ?` for an IN list or a VALUES row."""
    return ", ".join(["?"] * count)


async def fetch(db: Database, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """One statement on a pooled connection, committed on its own, for occasional use; returns its rows."""
    if db.dialect == "postgresql":
        async with (await db.raw_pool()).acquire() as pg:
            return [tuple(r) for r in await pg.fetch(_numbered(sql), *params)]
    async with db.engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection
        return [tuple(r) for r in await raw.execute_fetchall(sql, [_sqlite_param(p) for p in params])]


@asynccontextmanager
async def transaction(db: Database) -> AsyncIterator[Callable[[str, list[Any]], Awaitable[list[tuple[Any, ...]]]]]:
    """A transaction on a pooled connection for a few statements where a later one depends on an earlier
    one's rows; yields `fetch(sql, params)`. Committed on success, rolled back on error (or cancellation)."""
    if db.dialect == "postgresql":
        async with (await db.raw_pool()).acquire() as pg, pg.transaction():

            async def fetch_pg(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
                return [tuple(r) for r in await pg.fetch(_numbered(sql), *params)]

            yield fetch_pg
        return
    # SQLAlchemy opens it (BEGIN IMMEDIATE, see storage.db) and commits or rolls it back.
    async with db.engine.begin() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection

        async def fetch_sqlite(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await raw.execute_fetchall(sql, [_sqlite_param(p) for p in params])]

        yield fetch_sqlite


class FastConnection:
    """A long-lived driver connection for the inbox's batch writer.

    PostgreSQL: an asyncpg connection (a batch is one statement, one round trip). SQLite: a plain sqlite3
    connection whose short batch transaction runs right on the event loop (a thread hop costs more than
    the statement); only when another connection holds the write lock does it wait in a thread.
    A failed statement drops the connection; the next call reconnects.
    """

    def __init__(self, db: Database) -> None:
        self.url = make_url(async_url(db.url))
        self.postgres = db.dialect == "postgresql"
        self._raw: Any = None
        self._busy_ms = -1
        self._lock = asyncio.Lock()

    def stamp(self, value: datetime) -> Any:
        """A datetime as this driver wants it (convert once per batch, not once per parameter)."""
        return value if self.postgres else _sqlite_param(value)

    async def _connect(self) -> Any:
        if self.postgres:
            import asyncpg

            dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
            return await asyncpg.connect(dsn, server_settings=PG_SERVER_SETTINGS)
        self._busy_ms = -1
        raw = sqlite3.connect(self.url.database or ":memory:", isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            raw.execute(f"PRAGMA {pragma}")
        return raw

    async def transaction(self, statements: list[Statement]) -> list[list[tuple[Any, ...]]]:
        """Run the statements in one transaction; the rows each returned."""
        async with self._lock:
            if self._raw is None:
                self._raw = await self._connect()
            try:
                if self.postgres:
                    if len(statements) == 1:
                        sql, params = statements[0]
                        return [[tuple(r) for r in await self._raw.fetch(_numbered(sql), *params)]]
                    async with self._raw.transaction():
                        return [[tuple(r) for r in await self._raw.fetch(_numbered(sql), *params)]
                                for sql, params in statements]
                try:
                    return self._sqlite_transaction(statements, busy_ms=0)
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    return await asyncio.to_thread(self._sqlite_transaction, statements, 30_000)
            except BaseException:
                await self._drop()
                raise

    async def fetch(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        return (await self.transaction([(sql, params)]))[0]

    def _sqlite_transaction(self, statements: list[Statement], busy_ms: int) -> list[list[tuple[Any, ...]]]:
        """Parameters must already be SQLite values (see `stamp`)."""
        raw: sqlite3.Connection = self._raw
        if busy_ms != self._busy_ms:
            raw.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            self._busy_ms = busy_ms
        raw.execute("BEGIN IMMEDIATE")
        try:
            out = [raw.execute(sql, params).fetchall() for sql, params in statements]
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
        return out

    async def _drop(self) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            result = raw.close()
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # noqa: S110 - the connection is being dropped anyway
            pass

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
