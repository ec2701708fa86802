"""Who may use a command: members, group admins, bot admins.

Group admins are the owner and admins the platform reports for that group (kept in `group_admins` with
source "platform"), plus admins added per group by an operator (source "manual"). Bot admins come from
the config (`admins.bot_admins`) and may do everything everywhere.
"""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config
from storage import admins as admin_store
from storage.admins import GroupAdmin


class Role(IntEnum):
    MEMBER = 0
    GROUP_ADMIN = 1
    BOT_ADMIN = 2

    @property
    def label(self) -> str:
        return {Role.MEMBER: "member", Role.GROUP_ADMIN: "group_admin", Role.BOT_ADMIN: "bot_admin"}[self]


def is_bot_admin(config: Config, channel: str, user: str) -> bool:
    if not user:
        return False
    wanted = {user, f"{channel}:{user}"}
    return any(entry.strip() in wanted for entry in config.admins.bot_admins)


async def role_of(session: AsyncSession, config: Config, *, channel: str, user: str,
                  group_id: int | None, member_id: int | None) -> Role:
    """The caller's highest role in a group (or, outside any group, as a bot admin or a member)."""
    if is_bot_admin(config, channel, user):
        return Role.BOT_ADMIN
    if group_id is None or member_id is None:
        return Role.MEMBER
    if config.admins.trust_platform_admins:
        found = await admin_store.is_group_admin(session, group_id, member_id)
    else:
        found = any(a.source == admin_store.MANUAL for a in await _rows(session, group_id, member_id))
    return Role.GROUP_ADMIN if found else Role.MEMBER


async def _rows(session: AsyncSession, group_id: int, member_id: int) -> list[GroupAdmin]:
    from sqlalchemy import select

    rows = await session.execute(select(GroupAdmin).where(GroupAdmin.group_id == group_id,
                                                          GroupAdmin.member_id == member_id))
    return list(rows.scalars())
