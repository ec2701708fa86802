"""Welcome settings per group, joins waiting to be merged into one welcome, and synced platform templates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Index, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow
from storage.upsert import insert_for


class WelcomeSettings(SQLModel, table=True):
    """Per-group overrides; a missing row or a None field means the configured default."""

    __tablename__ = "welcome_settings"

    group_id: int = Field(foreign_key="groups.id", primary_key=True)
    enabled: bool | None = None
    template: str | None = Field(default=None, sa_type=Text)
    rules: str | None = Field(default=None, sa_type=Text)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PendingWelcome(SQLModel, table=True):
    """A join not yet welcomed; joins are claimed in batches so a burst becomes one message."""

    __tablename__ = "pending_welcomes"
    __table_args__ = (Index("ix_pending_welcomes_group_batch", "group_id", "batch"),)

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id")
    member_id: int = Field(foreign_key="members.id")
    name: str = Field(default="", max_length=255)
    # When the join was queued here; a burst ends when no join was queued for a whole merge window.
    queued_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    batch: str | None = Field(default=None, max_length=36)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PlatformWelcomeTemplate(SQLModel, table=True):
    """A welcome template kept on the platform (WeCom group_welcome_template) and what we last sent it."""

    __tablename__ = "platform_welcome_templates"

    key: str = Field(primary_key=True, max_length=128)
    template_id: str = Field(max_length=255)
    content_hash: str = Field(max_length=64)
    synced_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


async def get_settings(session: AsyncSession, group_id: int) -> WelcomeSettings | None:
    return await session.get(WelcomeSettings, group_id)


async def save_settings(session: AsyncSession, group_id: int, **fields: object) -> None:
    """Set some of enabled / template / rules for a group (None resets a field to the default)."""
    values = {"group_id": group_id, "updated_at": utcnow(), **fields}
    stmt = insert_for(session, WelcomeSettings).values(**values)
    stmt = stmt.on_conflict_do_update(index_elements=["group_id"], set_={k: v for k, v in values.items() if k != "group_id"})
    await session.execute(stmt)


async def add_pending(session: AsyncSession, group_id: int, member_id: int, name: str) -> None:
    session.add(PendingWelcome(group_id=group_id, member_id=member_id, name=name, queued_at=utcnow()))


async def latest_pending(session: AsyncSession, group_id: int) -> datetime | None:
    """When the newest unwelcomed join of the group was queued; None if every join was welcomed."""
    result = await session.execute(
        select(func.max(PendingWelcome.queued_at))
        .where(PendingWelcome.group_id == group_id, PendingWelcome.batch.is_(None))  # type: ignore[union-attr]
    )
    value = result.scalar_one_or_none()
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


async def claim_pending(session: AsyncSession, group_id: int) -> list[PendingWelcome]:
    """Atomically take every unclaimed join of the group; another process sees them as taken."""
    batch = str(uuid.uuid4())
    await session.execute(
        update(PendingWelcome)
        .where(PendingWelcome.group_id == group_id, PendingWelcome.batch.is_(None))  # type: ignore[union-attr]
        .values(batch=batch, claimed_at=utcnow())
    )
    result = await session.execute(
        select(PendingWelcome).where(PendingWelcome.batch == batch).order_by(PendingWelcome.id)  # type: ignore[arg-type]
    )
    return list(result.scalars())


async def get_platform_template(session: AsyncSession, key: str) -> PlatformWelcomeTemplate | None:
    return await session.get(PlatformWelcomeTemplate, key)


async def save_platform_template(session: AsyncSession, key: str, template_id: str, content_hash: str) -> None:
    stmt = insert_for(session, PlatformWelcomeTemplate).values(
        key=key, template_id=template_id, content_hash=content_hash, synced_at=utcnow()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"], set_={"template_id": template_id, "content_hash": content_hash, "synced_at": utcnow()}
    )
    await session.execute(stmt)
