"""Storage on SQLite and PostgreSQL: migrations match the models, memberships, idempotent rows, UTC times, leases."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import StatementError

from storage import models
from storage.db import Database
from storage.groups import (
    Group,
    Member,
    Membership,
    close_membership,
    dismiss_group,
    ensure_group,
    ensure_member,
    member_count,
    open_membership,
)
from storage.kv import ApiFailure, Lease, release_lease, try_lease
from storage.migrate import alembic_config, current_heads, upgrade
from tests.conftest import PG_ADMIN_URL, _truncate_pg

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with no tables at all (migration tests must not touch the session's shared one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    import asyncpg

    request.getfixturevalue("pg_template")  # skips (or fails in CI) exactly like the rest of the suite
    name = f"qunbot_migrate_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.close()


async def on_connection(url: str, fn: Any) -> Any:
    """Run a synchronous inspection function on an async connection to the database."""
    database = Database(url)
    try:
        async with database.engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await database.close()


def schema_differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return compare_metadata(context, models.metadata)


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def schema_snapshot(conn: Connection) -> dict[str, Any]:
    """Every table with its columns, indexes (with partial-index predicates), unique constraints and keys."""
    insp = inspect(conn)
    snapshot: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        snapshot[table] = (
            [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]), index_predicate(i))
                   for i in insp.get_indexes(table)),
            sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)),
            sorted((f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                   for f in insp.get_foreign_keys(table)),
            insp.get_pk_constraint(table)["constrained_columns"],
        )
    return snapshot


def index_predicate(index: Any) -> str | None:
    options = index.get("dialect_options", {})
    where = options.get("postgresql_where") or options.get("sqlite_where")
    return None if where is None else str(where).strip("()")


async def drop_index(url: str, name: str) -> None:
    database = Database(url)
    try:
        async with database.engine.begin() as conn:
            await conn.execute(text(f"DROP INDEX {name}"))
    finally:
        await database.close()


# -- migrations -----------------------------------------------------------------------------------


async def test_migrations_create_exactly_the_models_schema(empty_db_url):
    await upgrade(empty_db_url)
    # Nothing is ignored: alembic_version is Alembic's own table and compare_metadata already leaves it out.
    assert await on_connection(empty_db_url, schema_differences) == []

    # compare_metadata does not compare partial-index predicates, so check the one that keeps a single
    # open stay per member and group by hand.
    snapshot = await on_connection(empty_db_url, schema_snapshot)
    [open_stay] = [i for i in snapshot["memberships"][1] if i[0] == "uq_memberships_open"]
    assert open_stay == ("uq_memberships_open", ("group_id", "member_id"), True, "left_at IS NULL")

    # The comparison is not vacuous: a missing index is reported.
    await drop_index(empty_db_url, "ix_member_activity_day")
    [(kind, index)] = await on_connection(empty_db_url, schema_differences)
    assert (kind, index.name) == ("add_index", "ix_member_activity_day")


async def test_upgrade_is_idempotent_and_downgrade_then_upgrade_rebuilds_the_schema(empty_db_url):
    [head] = current_heads()
    await upgrade(empty_db_url)
    migrated = await on_connection(empty_db_url, schema_snapshot)
    assert set(migrated) == set(models.metadata.tables) | {"alembic_version"}
    database = Database(empty_db_url)
    try:
        async with database.session() as session:
            await ensure_group(session, "simulator", "g1", "读书会")

        await upgrade(empty_db_url)  # already at head: nothing changes, data stays
        assert await on_connection(empty_db_url, schema_snapshot) == migrated
        assert await on_connection(empty_db_url, current_revision) == head
        async with database.session() as session:
            assert (await session.execute(select(Group.name))).scalar_one() == "读书会"
    finally:
        await database.close()

    await asyncio.to_thread(command.downgrade, alembic_config(empty_db_url), "base")
    assert list(await on_connection(empty_db_url, schema_snapshot)) == ["alembic_version"]
    assert await on_connection(empty_db_url, current_revision) is None

    await upgrade(empty_db_url)
    assert await on_connection(empty_db_url, schema_snapshot) == migrated
    assert await on_connection(empty_db_url, current_revision) == head
    assert await on_connection(empty_db_url, schema_differences) == []


# -- groups, members, memberships -----------------------------------------------------------------


async def stays(db: Database, member: Member) -> list[tuple[int, datetime, datetime | None, str | None, str | None]]:
    async with db.session() as session:
        rows = await session.execute(
            select(Membership.group_id, Membership.joined_at, Membership.left_at, Membership.join_scene,
                   Membership.leave_scene)
            .where(Membership.member_id == member.id).order_by(Membership.id)  # type: ignore[arg-type]
        )
    return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def test_one_open_stay_per_member_and_group_and_a_rejoin_is_a_second_stay(db):
    hour = timedelta(hours=1)
    async with db.session() as session:
        group = await ensure_group(session, "simulator", "g1", "读书会")
        other = await ensure_group(session, "simulator", "g2", "跑步群")
        a = await ensure_member(session, "simulator", "a", "阿甲")
        b = await ensure_member(session, "simulator", "b", "阿乙")
        assert await open_membership(session, group, a, joined_at=T0, join_scene="invited", inviter=b)
        assert not await open_membership(session, group, a, joined_at=T0 + hour, join_scene="seen")
        assert await open_membership(session, group, b, joined_at=T0)
        assert await open_membership(session, other, a, joined_at=T0)
        assert await member_count(session, group) == 2

        assert await close_membership(session, group, a, left_at=T0 + 2 * hour, leave_scene="left")
        assert not await close_membership(session, group, a, left_at=T0 + 2 * hour)  # no open stay left
        assert await member_count(session, group) == 1
        assert await open_membership(session, group, a, joined_at=T0 + 3 * hour, join_scene="qrcode")
        assert not await open_membership(session, group, a, joined_at=T0 + 4 * hour)
        assert await member_count(session, group) == 2

    assert await stays(db, a) == [
        (group.id, T0, T0 + 2 * hour, "invited", "left"),
        (other.id, T0, None, None, None),
        (group.id, T0 + 3 * hour, None, "qrcode", None),
    ]

    async with db.session() as session:
        await dismiss_group(session, group, T0 + 5 * hour)
        assert await member_count(session, group) == 0
        assert await member_count(session, other) == 1
        assert (await session.get(Group, group.id)).dismissed_at == T0 + 5 * hour  # type: ignore[union-attr]
    assert await stays(db, a) == [
        (group.id, T0, T0 + 2 * hour, "invited", "left"),  # an earlier stay keeps how it ended
        (other.id, T0, None, None, None),
        (group.id, T0 + 3 * hour, T0 + 5 * hour, "qrcode", "dismissed"),
    ]
    assert await stays(db, b) == [(group.id, T0, T0 + 5 * hour, None, "dismissed")]


async def test_concurrent_joins_open_one_stay(db):
    async with db.session() as session:
        group = await ensure_group(session, "simulator", "g1")
        member = await ensure_member(session, "simulator", "a")

    async def join() -> bool:
        async with db.session() as session:
            return await open_membership(session, group, member, joined_at=T0)

    assert sorted(await asyncio.gather(*(join() for _ in range(20)))) == [False] * 19 + [True]
    assert len(await stays(db, member)) == 1


async def test_ensure_group_and_member_are_idempotent_under_concurrency(db):
    async def group_id(name: str | None) -> int:
        async with db.session() as session:
            return (await ensure_group(session, "simulator", "g1", name)).id  # type: ignore[return-value]

    async def member_id(name: str | None) -> int:
        async with db.session() as session:
            return (await ensure_member(session, "simulator", "u1", name)).id  # type: ignore[return-value]

    names = [None, *(f"名字{n}" for n in range(19))]
    group_ids = await asyncio.gather(*(group_id(n) for n in names))
    member_ids = await asyncio.gather(*(member_id(n) for n in names))
    assert len(set(group_ids)) == 1 and len(set(member_ids)) == 1
    async with db.session() as session:
        assert (await session.execute(select(func.count()).select_from(Group))).scalar_one() == 1
        assert (await session.execute(select(func.count()).select_from(Member))).scalar_one() == 1
        assert (await session.execute(select(Group.name))).scalar_one() in names


async def test_ensure_group_and_member_keep_names_up_to_date(db):
    async def group(name: str | None = None, channel: str = "simulator") -> Group:
        async with db.session() as session:
            return await ensure_group(session, channel, "g1", name)

    async def member(name: str | None = None, kind: str | None = None) -> Member:
        async with db.session() as session:
            return await ensure_member(session, "simulator", "u1", name, kind)

    first = await group()
    assert first.name == ""
    assert (await group("读书会")).name == "读书会"
    assert (await group()).name == "读书会"  # an unknown name keeps the known one
    renamed = await group("读书会（二群）")
    assert (renamed.id, renamed.name) == (first.id, "读书会（二群）")
    assert (await group("别的门", channel="wecom")).id != first.id  # the same platform id on another door

    created = await member("小明", "external")
    await asyncio.sleep(0.01)
    kept = await member()
    assert (kept.id, kept.name, kept.kind, kept.updated_at) == (created.id, "小明", "external", created.updated_at)
    await asyncio.sleep(0.01)
    updated = await member("明明")
    assert (updated.id, updated.name, updated.kind, updated.created_at) == (created.id, "明明", "external",
                                                                           created.created_at)
    assert updated.updated_at > created.updated_at


async def test_ensure_group_and_member_return_the_updated_row_within_one_session(db):
    async with db.session() as session:
        group = await ensure_group(session, "simulator", "g1")
        member = await ensure_member(session, "simulator", "u1", "小明")
        renamed_group = await ensure_group(session, "simulator", "g1", "读书会")
        renamed_member = await ensure_member(session, "simulator", "u1", "明明", "staff")
    assert (renamed_group.id, renamed_member.id) == (group.id, member.id)
    assert (renamed_group.name, renamed_member.name, renamed_member.kind) == ("读书会", "明明", "staff")


# -- UTC datetimes --------------------------------------------------------------------------------


async def test_aware_datetimes_round_trip_as_utc(db):
    shanghai = ZoneInfo("Asia/Shanghai")
    early = datetime(2026, 1, 2, 0, 30, 0, 123456, tzinfo=shanghai)  # 2026-01-01 16:30:00.123456 UTC
    late = datetime(2026, 1, 1, 17, 0, tzinfo=UTC)
    async with db.session() as session:
        session.add(ApiFailure(api="early", at=early))
        session.add(ApiFailure(api="late", at=late))
    async with db.session() as session:
        rows = {r.api: r.at for r in (await session.execute(select(ApiFailure))).scalars()}
        assert rows == {"early": early, "late": late}
        assert all(at.utcoffset() == timedelta(0) for at in rows.values())
        assert rows["early"].replace(tzinfo=None) == datetime(2026, 1, 1, 16, 30, 0, 123456)
        # Stored as UTC, so comparisons in SQL follow the instant, not the wall clock it was given in.
        for bound in (datetime(2026, 1, 1, 16, 45, tzinfo=UTC), datetime(2026, 1, 2, 0, 45, tzinfo=shanghai)):
            before = await session.execute(select(ApiFailure.api).where(ApiFailure.at < bound))
            assert list(before.scalars()) == ["early"]
        raw = (await session.execute(text("SELECT at FROM api_failures WHERE api = 'early'"))).scalar_one()
    if db.dialect == "sqlite":
        assert raw == "2026-01-01 16:30:00.123456"
    else:
        assert raw == early and raw.utcoffset() == timedelta(0)


async def test_naive_datetimes_are_refused(db):
    with pytest.raises(StatementError, match="naive datetime"):
        async with db.session() as session:
            session.add(ApiFailure(api="naive", at=datetime(2026, 1, 1, 8, 0)))
    with pytest.raises(StatementError, match="naive datetime"):
        async with db.session() as session:
            await session.execute(select(ApiFailure).where(ApiFailure.at < datetime(2026, 1, 1)))
    async with db.session() as session:
        assert (await session.execute(select(func.count()).select_from(ApiFailure))).scalar_one() == 0


# -- leases ---------------------------------------------------------------------------------------


async def lease_holder(db: Database, name: str) -> tuple[str, datetime] | None:
    async with db.session() as session:
        lease = await session.get(Lease, name)
    return (lease.holder, lease.expires_at) if lease else None


async def test_a_lease_has_one_holder_until_it_expires_or_is_released(db):
    assert await try_lease(db, "scheduler", "a", 30)
    assert not await try_lease(db, "scheduler", "b", 30)
    assert await try_lease(db, "other-job", "b", 30)  # leases are independent by name

    # Renewal by the holder pushes the expiry out.
    _, first_expiry = await lease_holder(db, "scheduler")  # type: ignore[misc]
    await asyncio.sleep(0.01)
    assert await try_lease(db, "scheduler", "a", 30)
    holder, renewed_expiry = await lease_holder(db, "scheduler")  # type: ignore[misc]
    assert holder == "a" and renewed_expiry > first_expiry

    # A short lease renewed for longer outlives its first expiry.
    assert await try_lease(db, "scheduler", "a", 0.3)
    assert await try_lease(db, "scheduler", "a", 30)
    await asyncio.sleep(0.4)
    assert not await try_lease(db, "scheduler", "b", 30)

    # Once it expires, another holder gets it, and the old holder does not get it back.
    assert await try_lease(db, "scheduler", "a", 0.3)
    await asyncio.sleep(0.4)
    assert await try_lease(db, "scheduler", "b", 30)
    assert not await try_lease(db, "scheduler", "a", 30)

    # Only the holder can release it.
    await release_lease(db, "scheduler", "a")
    assert not await try_lease(db, "scheduler", "c", 30)
    await release_lease(db, "scheduler", "b")
    assert await lease_holder(db, "scheduler") is None
    assert await try_lease(db, "scheduler", "c", 30)


async def test_concurrent_takers_get_a_lease_once(db):
    first = await asyncio.gather(*(try_lease(db, "fresh", f"p{n}", 30) for n in range(20)))
    assert first.count(True) == 1
    assert await try_lease(db, "expired", "old", 0.05)
    await asyncio.sleep(0.1)
    second = await asyncio.gather(*(try_lease(db, "expired", f"p{n}", 30) for n in range(20)))
    assert second.count(True) == 1
    holder, _ = await lease_holder(db, "expired")  # type: ignore[misc]
    assert holder == f"p{second.index(True)}"


async def test_inbox_batches_find_their_rows_by_key_however_the_inbox_grew(pg_template):
    """The inbox writer is one long-lived connection. On PostgreSQL a prepared statement may switch to one
    generic plan after five runs; made while the inbox was nearly empty, it scanned the whole inbox for every
    batch's done marks (most of PostgreSQL's CPU in the callback benchmark). Its plans must follow the data.
    (SQLite has no plan cache: its rowid lookups are always by key.)"""
    await _truncate_pg(pg_template)
    db = Database(pg_template)
    import asyncpg

    from storage import fastsql
    from storage.inbox import NewMessage, write_batch

    admin = await asyncpg.connect(db.url.replace("postgresql+asyncpg://", "postgresql://"))

    async def rows_scanned() -> int:
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        return await admin.fetchval("SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'inbox'")

    bulk = 5000
    conn = fastsql.FastConnection(db)
    try:
        before = await rows_scanned()
        lease = timedelta(minutes=5)
        previous: list[int] = []
        for batch in range(16):
            if batch == 8:  # the inbox grows after the plan was made (at the sixth run of the statement)
                await admin.execute(
                    "INSERT INTO inbox (channel, message_key, event_type, payload, received_at, status, attempts) "
                    f"SELECT 'wecom', 'bulk' || n, 'text', '{{}}', now(), 'done', 1 FROM generate_series(1, {bulk}) n")
            items = [NewMessage("wecom", f"m{batch}-{n}", "text", "{}") for n in range(4)]
            previous = list((await write_batch(conn, items, previous, lease=lease)).values())
            assert len(previous) == 4
        # One deliberate scan of the whole inbox last, to know when the connection's statistics have arrived
        # (a closing backend reports them). While the inbox was a few rows, scanning it was fine.
        await conn.fetch("SELECT count(*) FROM inbox", [])
        await conn.close()
        deadline = asyncio.get_running_loop().time() + 10
        while (scanned := await rows_scanned() - before) < bulk and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 - polling another server
            await asyncio.sleep(0.1)
        whole_scans = scanned // bulk
        assert whole_scans == 1, f"{whole_scans - 1} batches scanned the whole inbox"
    finally:
        await conn.close()
        await admin.close()
        await db.close()
