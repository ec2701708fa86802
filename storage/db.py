"""Async engines and sessions: aiosqlite for the embedded SQLite, asyncpg for PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the only kind stored)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC; reads them back aware, also from SQLite, which keeps no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def async_url(url: str) -> str:
    """Pick the async driver for a plain database URL (sqlite:/// → aiosqlite, postgresql:// → asyncpg)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(async_url(url)).get_backend_name() == "sqlite"


# Execution option of read sessions: on SQLite their "transaction" takes no lock (statements autocommit).
READ_ONLY = "qunbot_read_only"


# Every PostgreSQL connection plans each statement for its parameters. asyncpg prepares statements, and after
# five runs PostgreSQL may keep one generic plan for the connection's life: one made while a table was nearly
# empty (a fresh database) stays a sequential scan as the table grows, until an ANALYZE happens to replace it.
# The inbox writer's batch statement did exactly that: in one 6-second callback benchmark it read 44 million
# inbox rows, and PostgreSQL spent 110-130 µs of CPU per event instead of 35-55 µs. Planning these short
# statements costs far less than that.
PG_SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An async engine; for SQLite, WAL mode and one writer at a time without spurious 'database is locked'."""
    url = async_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has one writer anyway, and queueing in asyncio beats SQLite's busy
        # handler, which sleeps in steps of up to 100 ms while another connection holds the lock.
        # Sessions always end their transactions and fastsql runs in autocommit, so the pool need not
        # roll back on every return (a thread hop per checkout).
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, pool_size=1, max_overflow=0,
                                     pool_timeout=120, pool_reset_on_return=None)
        _tune_sqlite(engine)
        return engine
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800,
        connect_args={"server_settings": PG_SERVER_SETTINGS},
    )


def _tune_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, open transactions, so BEGIN IMMEDIATE below takes effect.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that upgrades to a write fails at once
        # with SQLITE_BUSY instead of waiting for busy_timeout. Read sessions run in autocommit instead
        # (each SELECT its own snapshot), so they never hold the lock the inbox journal needs.
        if conn.get_execution_options().get(READ_ONLY):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE")


async def _nothing_to_reset(_conn: Any) -> None:
    return None


class Database:
    """The engine plus a session factory; one per process."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.pool_size = pool_size
        self.engine = create_engine(url, pool_size=pool_size, echo=echo)
        self._raw_pool: Any = None
        self._raw_pool_lock = asyncio.Lock()
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, class_=AsyncSession)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """A session for reading only: on SQLite it takes no write lock (each statement sees the latest
        committed data); on PostgreSQL it is an ordinary transaction. Don't write through it."""
        async with self.sessions() as session:
            if self.dialect == "sqlite":
                await session.connection(execution_options={READ_ONLY: True})
                yield session
            else:
                async with session.begin():
                    yield session

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def raw_pool(self) -> Any:
        """PostgreSQL only: an asyncpg pool for the hot-path reads in storage.fastsql (a checkout costs no
        SQLAlchemy layers and no pre-ping round trip)."""
        if self._raw_pool is None:
            async with self._raw_pool_lock:
                if self._raw_pool is None:
                    import asyncpg

                    dsn = make_url(async_url(self.url)).set(drivername="postgresql").render_as_string(
                        hide_password=False)
                    # Only plain reads run here (no session state to undo), so skip asyncpg's reset query
                    # (RESET ALL, UNLISTEN …), a round trip on every release.
                    self._raw_pool = await asyncpg.create_pool(dsn, min_size=1, max_size=self.pool_size,
                                                               reset=_nothing_to_reset,
                                                               server_settings=PG_SERVER_SETTINGS)
        return self._raw_pool

    async def close(self) -> None:
        if self._raw_pool is not None:
            await self._raw_pool.close()
            self._raw_pool = None
        await self.engine.dispose()
