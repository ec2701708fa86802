"""The audit log: every admin action, from chat, the CLI or the console (who, when, where, what, result)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow

OK = "ok"
REFUSED = "refused"
USAGE = "usage"
ERROR = "error"


# Where an action came from: a chat command, the CLI, the web console, or the config file (campaigns
# declared there, applied on start).
SOURCES = ("chat", "cli", "console", "config")


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    # One of SOURCES.
    source: str = Field(max_length=16)
    channel: str = Field(default="", max_length=32)
    # The platform's group id (external), empty for actions not tied to a group.
    group: str = Field(default="", max_length=128, index=True)
    # The platform user id in chat, the OS user on the CLI, the account in the console.
    actor: str = Field(default="", max_length=128)
    command: str = Field(max_length=64)
    args: str = Field(default="")
    result: str = Field(max_length=16)
    detail: str = Field(default="")


async def record(session: AsyncSession, *, source: str, command: str, result: str, actor: str = "",
                 channel: str = "", group: str | None = None, args: str = "", detail: str = "",
                 at: datetime | None = None) -> AuditEntry:
    entry = AuditEntry(at=at or utcnow(), source=source, channel=channel, group=group or "", actor=actor,
                       command=command, args=args[:2000], result=result, detail=detail[:2000])
    session.add(entry)
    await session.flush()
    return entry


async def recent(session: AsyncSession, *, group: str | None = None, channel: str | None = None,
                 limit: int = 50) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)  # type: ignore[attr-defined,union-attr]
    if group is not None:
        query = query.where(AuditEntry.group == group)
    if channel is not None:
        query = query.where(AuditEntry.channel == channel)
    return list((await session.execute(query)).scalars())


async def search(session: AsyncSession, *, groups: Sequence[tuple[str, str]] | None = None,
                 group: tuple[str, str] | None = None, source: str | None = None, actor: str | None = None,
                 text: str | None = None, before_id: int | None = None, limit: int = 50) -> list[AuditEntry]:
    """Entries newest first, filtered: `groups` limits to those (channel, group id) pairs (None: every entry,
    also those tied to no group), `group` to one of them; `text` is matched in command, args and detail;
    `before_id` pages further back."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)  # type: ignore[union-attr]
    if groups is not None:
        pairs = [and_(AuditEntry.channel == c, AuditEntry.group == g) for c, g in groups]
        query = query.where(or_(*pairs) if pairs else false())
    if group is not None:
        query = query.where(AuditEntry.channel == group[0], AuditEntry.group == group[1])
    if source:
        query = query.where(AuditEntry.source == source)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if text:
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(*(col.ilike(like, escape="\\") for col in  # type: ignore[attr-defined]
                                  (AuditEntry.command, AuditEntry.args, AuditEntry.detail))))
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)  # type: ignore[operator]
    return list((await session.execute(query)).scalars())
