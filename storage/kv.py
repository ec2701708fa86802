"""Small shared state every process must agree on: cached access tokens, leases, and API failures."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Text, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from storage.db import Database, UTCDateTime, utcnow
from storage.upsert import insert_for


class HideStatementsOn(logging.Filter):
    """aiosqlite logs every statement with its parameters at DEBUG: this one hides the parameters of those on
    `table` (a table holding a credential), keeping only the statement's first word."""

    def __init__(self, table: str) -> None:
        super().__init__()
        self.table = table

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record we cannot format is not ours to judge
            return True
        if self.table in text:
            record.msg = f"%s a statement on {self.table} (parameters hidden)"
            record.args = (text.split(" ", 1)[0],)
        return True


# Tokens must never reach the logs, not even at DEBUG (docs/platform.md §6: one token serves every process).
logging.getLogger("aiosqlite").addFilter(HideStatementsOn("access_tokens"))


class AccessToken(SQLModel, table=True):
    __tablename__ = "access_tokens"

    key: str = Field(primary_key=True, max_length=128)
    token: str = Field(sa_type=Text)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Lease(SQLModel, table=True):
    """A named lock held by one process until it expires (cross-process mutual exclusion)."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=128)
    holder: str = Field(max_length=128)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class ApiFailure(SQLModel, table=True):
    """A platform API call that failed for good: kept for ops, never swallowed."""

    __tablename__ = "api_failures"

    id: int | None = Field(default=None, primary_key=True)
    api: str = Field(max_length=255)
    errcode: int | None = None
    errmsg: str = Field(default="", sa_type=Text)
    attempts: int = 1
    detail: str = Field(default="", sa_type=Text)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


class DbTokenStore:
    """Access tokens and leases in the database, shared by every process (the WeCom client's TokenStore)."""

    def __init__(self, db: Database, holder: str) -> None:
        self.db = db
        self.holder = holder

    async def load_token(self, key: str) -> tuple[str, datetime] | None:
        async with self.db.session() as session:
            row = (await session.execute(select(AccessToken).where(AccessToken.key == key))).scalar_one_or_none()
            return (row.token, row.expires_at) if row else None

    async def save_token(self, key: str, token: str, expires_at: datetime) -> None:
        async with self.db.session() as session:
            stmt = insert_for(session, AccessToken).values(key=key, token=token, expires_at=expires_at,
                                                           updated_at=utcnow())
            stmt = stmt.on_conflict_do_update(
                index_elements=["key"], set_={"token": token, "expires_at": expires_at, "updated_at": utcnow()}
            )
            await session.execute(stmt)

    async def drop_token(self, key: str, token: str) -> None:
        async with self.db.session() as session:
            await session.execute(delete(AccessToken).where(AccessToken.key == key, AccessToken.token == token))

    async def try_lock(self, name: str, ttl_seconds: float) -> bool:
        return await try_lease(self.db, name, self.holder, ttl_seconds)

    async def unlock(self, name: str) -> None:
        await release_lease(self.db, name, self.holder)


async def try_lease(db: Database, name: str, holder: str, ttl_seconds: float) -> bool:
    """Take or renew the named lease; True if `holder` holds it afterwards."""
    now = utcnow()
    until = now + timedelta(seconds=ttl_seconds)
    async with db.session() as session:
        taken = await session.execute(
            update(Lease)
            .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))  # type: ignore[operator]
            .values(holder=holder, expires_at=until)
        )
        if taken.rowcount:
            return True
    try:
        async with db.session() as session:
            session.add(Lease(name=name, holder=holder, expires_at=until))
        return True
    except IntegrityError:
        return False


async def release_lease(db: Database, name: str, holder: str) -> None:
    async with db.session() as session:
        await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


class DbFailureRecorder:
    """Writes final API failures to api_failures (the WeCom client's FailureRecorder)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_api_failure(self, *, api: str, errcode: int | None, errmsg: str, attempts: int, detail: str) -> None:
        async with self.db.session() as session:
            session.add(ApiFailure(api=api, errcode=errcode, errmsg=errmsg[:2000], attempts=attempts,
                                   detail=detail[:4000]))
