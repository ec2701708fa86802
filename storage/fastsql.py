"""Driver-level statements for the inbox hot path (one round trip, no ORM layers).

SQL is written once with `?` placeholders: they become $1, $2 … for asyncpg; datetimes become the text
format SQLAlchemy stores in SQLite, so rows written here read back through the models as usual. Each
call is one statement, committed on its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from storage.db import Database


def _sqlite_param(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _numbered(sql: str) -> str:
    parts = sql.split("?")
    return "".join(f"{part}${n}" if n < len(parts) else part for n, part in enumerate(parts, start=1))


def placeholders(count: int) -> str:
    """`?, ?, ?` for an IN list or a VALUES row."""
    return ", ".join(["?"] * count)


async def fetch(db: Database, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Run one statement in its own transaction and return its rows (RETURNING or SELECT)."""
    async with db.engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection
        if db.dialect == "postgresql":
            return [tuple(r) for r in await raw.fetch(_numbered(sql), *params)]
        # The connection is in autocommit mode: a single statement is its own transaction (one hop).
        rows = await raw.execute_fetchall(sql, [_sqlite_param(p) for p in params])
        return [tuple(r) for r in rows]
