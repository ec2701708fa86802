"""Shared fixtures: every storage-dependent test runs on SQLite and on PostgreSQL, through real sockets."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bot.app import create_app
from bot.config import Config, load_config
from bot.runtime import Runtime
from storage.migrate import upgrade

PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES_IN_FK_ORDER = None


async def _pg_available() -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql://", "postgres://"), timeout=3)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


def _run(coro_fn: Any) -> Any:
    """Run a coroutine to completion on a private loop (session fixtures start inside a running loop)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()


# Test files that run several real bot processes and assert how fast they take over or how their timers fire:
# under pytest-xdist (./test.sh: -n auto --dist loadgroup) they form one work unit, so they run one after the
# other on one worker (and first: the biggest unit is scheduled first) while the other workers run the rest.
SERIAL_GROUP = "bot-processes"
SERIAL_FILES = {"test_push_crash.py", "test_push_two_processes.py", "test_two_processes.py", "test_processes.py"}


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: ignored when xdist is not installed
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """--dist loadgroup, with SERIAL_FILES in one group. Grouped by file name here because xdist 3.8's own
    grouping (the xdist_group mark) silently does nothing on pytest 9.2 (pytest-xdist issue #1386)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SerialFilesScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.split("::", 1)[0].rsplit("/", 1)[-1] in SERIAL_FILES:
                return SERIAL_GROUP
            return super()._split_scope(nodeid)

    return SerialFilesScheduling(config, log)


@pytest.fixture(scope="session")
def pg_template() -> str:
    """A PostgreSQL database for this test session, migrated once (dropped at the end)."""
    import asyncpg

    problem = _run(_pg_available)
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and not reachable at {PG_ADMIN_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable ({problem}); set TEST_PG_URL")
    name = f"qunbot_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def create() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        await conn.execute(f'CREATE DATABASE "{name}"')
        # Commits return without waiting for the WAL flush (only a crash of the PostgreSQL server itself could
        # lose them, which no test does); every other session still sees a commit at once.
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    _run(create)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _run(lambda: upgrade(url))
    yield url
    _run(drop)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per test session; each test gets a copy of the file (migrating each
    test's own file took a third of a second or more, hundreds of times over)."""
    import sqlite3

    path = tmp_path_factory.mktemp("sqlite-template") / "qunbot.db"
    _run(lambda: upgrade(f"sqlite:///{path}"))
    conn = sqlite3.connect(path)  # fold any write-ahead log into the file, so the file alone is the database
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path


async def _truncate_pg(url: str) -> None:
    """Empty every table and restart every sequence, leaving the tables as a fresh database has them.

    Only the tables with rows are touched: DELETE (children before parents) and then VACUUM, which gives the
    emptied pages back, so that new rows are stored, and read back by an unordered query, in the order they
    are inserted, as in a new table. That takes a few milliseconds per table where TRUNCATE, which has to
    take every table that references one (new files for each table and index), took most of a second."""
    import asyncpg

    from storage.models import metadata

    tables = [table.name for table in reversed(metadata.sorted_tables)]
    probe = " UNION ALL ".join(f"SELECT '{name}' WHERE EXISTS (SELECT FROM \"{name}\")" for name in tables)
    restart = ("SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, start_value, false) "
               "FROM pg_sequences WHERE schemaname = current_schema()")
    conn = await asyncpg.connect(url)
    try:
        filled = {row[0] for row in await conn.fetch(probe)}
        used = [name for name in tables if name in filled]
        async with conn.transaction():
            await conn.execute("".join(f'DELETE FROM "{name}";' for name in used) + restart)
        if used:
            await conn.execute("VACUUM " + ", ".join(f'"{name}"' for name in used))
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database: a fresh SQLite file (a copy of the session's migrated one), or the session's
    PostgreSQL database emptied."""
    if request.param == "sqlite":
        path = tmp_path / "qunbot.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_template")
        await _truncate_pg(url)
        yield url


def make_config(db_url: str, **sections: dict[str, Any]) -> Config:
    """A config for tests: the given database, fast welcome merging, no migrations on start."""
    env = {"QUNBOT_DATABASE_URL": db_url, "QUNBOT_DATABASE_AUTO_MIGRATE": "false",
           "QUNBOT_WELCOME_MERGE_WINDOW_SECONDS": "0.2"}
    for section, values in sections.items():
        for key, value in values.items():
            env[f"QUNBOT_{section}_{key}".upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return load_config(None, environ=env)


class BotServer:
    """A running bot on a real loopback socket, with an HTTP client session."""

    def __init__(self, server: TestServer, runtime: Runtime, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.runtime = runtime
        self.http = http

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def post_json(self, path: str, data: Any) -> tuple[int, Any]:
        async with self.http.post(self.url(path), json=data) as resp:
            return resp.status, await resp.json(content_type=None)

    async def get_json(self, path: str, **params: Any) -> tuple[int, Any]:
        async with self.http.get(self.url(path), params=params) as resp:
            return resp.status, await resp.json(content_type=None)


async def start_bot(config: Config) -> tuple[TestServer, Runtime]:
    from bot.app import RUNTIME

    app = create_app(config)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, app[RUNTIME]


@pytest.fixture
async def bot_factory() -> AsyncIterator[Any]:
    """Start one or more bots (each like a separate process: own runtime, engine and workers)."""
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def factory(config: Config) -> BotServer:
        server, runtime = await start_bot(config)
        http = aiohttp.ClientSession()
        started.append((server, http))
        return BotServer(server, runtime, http)

    yield factory
    for server, http in started:
        await http.close()
        await server.close()


@pytest.fixture
async def bot(db_url: str, bot_factory: Any) -> BotServer:
    """The bot with its default doors (the simulator) on the test database."""
    return await bot_factory(make_config(db_url))
