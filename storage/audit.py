"""The audit log: every admin action, from chat, the CLI or the console (who, when, where, what, result)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow

OK = "ok"
REFUSED = "refused"
USAGE = "usage"
ERROR = "error"


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    # "chat", "cli" or "console".
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
