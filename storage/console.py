"""Ops console accounts: users and their roles, the groups a group admin may see, sessions, login attempts.

Passwords are stored as scrypt hashes (hashlib.scrypt, stdlib; see bot/console/auth.py), never in clear.
A session is a row keyed by the SHA-256 of the random token in the browser's cookie, so a leaked table
gives no working cookie; it carries its own expiry and CSRF token, and any process reads it, so two
processes serve the same logged-in browser. Login attempts are rows too: the rate limit per username and
per client address is a count over them, the same in every process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Index, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow
from storage.groups import Group
from storage.upsert import insert_for

OPS_ADMIN = "ops_admin"  # everything
OPS_VIEWER = "ops_viewer"  # reads everything, changes nothing
GROUP_ADMIN = "group_admin"  # reads and changes only the groups given to them
ROLES = (OPS_ADMIN, OPS_VIEWER, GROUP_ADMIN)


class ConsoleUser(SQLModel, table=True):
    __tablename__ = "console_users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    # "scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>"
    password_hash: str = Field(max_length=255)
    role: str = Field(max_length=16)
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    password_changed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ConsoleUserGroup(SQLModel, table=True):
    """A group a group_admin account may see and change."""

    __tablename__ = "console_user_groups"

    user_id: int = Field(foreign_key="console_users.id", primary_key=True)
    group_id: int = Field(foreign_key="groups.id", primary_key=True, index=True)


class ConsoleSession(SQLModel, table=True):
    __tablename__ = "console_sessions"

    # SHA-256 (hex) of the cookie's token: the token itself is never stored.
    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="console_users.id", index=True)
    # Sent back by the page's script in the X-CSRF-Token header of every state-changing request.
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    ip: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=255)


class ConsoleLoginAttempt(SQLModel, table=True):
    __tablename__ = "console_login_attempts"
    __table_args__ = (
        Index("ix_console_login_attempts_username_at", "username", "at"),
        Index("ix_console_login_attempts_ip_at", "ip", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # As typed (lower-cased, cut to 64): attempts on unknown names count too.
    username: str = Field(max_length=64)
    ip: str = Field(max_length=64)
    success: bool = False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_username(name: str) -> str:
    return name.strip().lower()[:64]


# -- users ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A console user as a request sees it: who, which role, and (for a group admin) which groups."""

    id: int
    username: str
    role: str
    # None: every group (ops roles); otherwise the ids of the groups a group admin may see.
    group_ids: frozenset[int] | None

    @property
    def can_write(self) -> bool:
        return self.role in (OPS_ADMIN, GROUP_ADMIN)

    def sees_group(self, group_id: int) -> bool:
        return self.group_ids is None or group_id in self.group_ids


async def find_user(session: AsyncSession, username: str) -> ConsoleUser | None:
    row = await session.execute(select(ConsoleUser).where(ConsoleUser.username == normalize_username(username)))
    return row.scalar_one_or_none()


async def user_count(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(ConsoleUser))).scalar_one())


async def list_users(session: AsyncSession) -> list[tuple[ConsoleUser, list[Group]]]:
    users = list((await session.execute(select(ConsoleUser).order_by(ConsoleUser.username))).scalars())
    rows = await session.execute(select(ConsoleUserGroup.user_id, Group).join(
        Group, Group.id == ConsoleUserGroup.group_id).order_by(Group.channel, Group.external_id))  # type: ignore[arg-type]
    groups: dict[int, list[Group]] = {}
    for user_id, group in rows.all():
        groups.setdefault(user_id, []).append(group)
    return [(u, groups.get(u.id, [])) for u in users]  # type: ignore[arg-type]


async def create_user(session: AsyncSession, *, username: str, password_hash: str, role: str,
                      group_ids: Sequence[int] = ()) -> ConsoleUser | None:
    """A new account; None if the name is taken."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    now = utcnow()
    stmt = insert_for(session, ConsoleUser).values(
        username=normalize_username(username), password_hash=password_hash, role=role, disabled=False,
        created_at=now, password_changed_at=now).on_conflict_do_nothing(index_elements=["username"])
    if not (await session.execute(stmt)).rowcount:
        return None
    user = await find_user(session, username)
    assert user is not None and user.id is not None
    await set_user_groups(session, user.id, group_ids)
    return user


async def set_user_groups(session: AsyncSession, user_id: int, group_ids: Sequence[int]) -> None:
    await session.execute(delete(ConsoleUserGroup).where(ConsoleUserGroup.user_id == user_id))
    for group_id in sorted(set(group_ids)):
        session.add(ConsoleUserGroup(user_id=user_id, group_id=group_id))
    await session.flush()


async def set_password(session: AsyncSession, user_id: int, password_hash: str) -> None:
    """Change the password and end every session of the account (logged out everywhere)."""
    await session.execute(update(ConsoleUser).where(ConsoleUser.id == user_id)  # type: ignore[arg-type]
                          .values(password_hash=password_hash, password_changed_at=utcnow()))
    await session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))


async def set_disabled(session: AsyncSession, user_id: int, disabled: bool) -> None:
    await session.execute(update(ConsoleUser).where(ConsoleUser.id == user_id).values(disabled=disabled))  # type: ignore[arg-type]
    if disabled:
        await session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))


async def live_session_counts(session: AsyncSession, now: datetime | None = None) -> dict[int, int]:
    """{user id: sessions not expired yet} (an idle one counts until it expires or is purged)."""
    rows = await session.execute(select(ConsoleSession.user_id, func.count()).where(
        ConsoleSession.expires_at > (now or utcnow())).group_by(ConsoleSession.user_id))  # type: ignore[arg-type,operator]
    return {int(user_id): int(n) for user_id, n in rows.all()}


# -- account changes: what `qunbot console …` and the console's 账号管理 page both call -------------------


class AccountProblem(ValueError):
    """A refused account change: `code` picks the console's text (console.error.<code>), the message is the
    CLI's (English)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_username(name: str) -> str:
    """The login name as stored (trimmed, lower case); AccountProblem unless 1 to 64 characters without spaces."""
    normalized = normalize_username(name)
    if not normalized or len(name.strip()) > 64 or any(c.isspace() for c in normalized):
        raise AccountProblem("bad_username", "the name must be 1 to 64 characters without spaces")
    return normalized


def check_access(role: str, group_count: int) -> None:
    """A role and its groups: a group admin needs at least one group, the ops roles see every group."""
    if role not in ROLES:
        raise AccountProblem("bad_role", f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if role == GROUP_ADMIN and not group_count:
        raise AccountProblem("groups_needed", "a group_admin needs at least one group")
    if role != GROUP_ADMIN and group_count:
        raise AccountProblem("groups_not_allowed", f"groups are only for group_admin accounts; a {role} sees every group")


async def add_user(session: AsyncSession, *, username: str, password_hash: str, role: str,
                   group_ids: Sequence[int] = ()) -> ConsoleUser:
    """A new account, checked (name, role and groups); AccountProblem("name_taken") if the name is in use."""
    name = check_username(username)
    check_access(role, len(set(group_ids)))
    user = await create_user(session, username=name, password_hash=password_hash, role=role, group_ids=group_ids)
    if user is None:
        raise AccountProblem("name_taken", f"a console user {name!r} exists already")
    return user


async def _lock_for_change(session: AsyncSession, user_id: int) -> tuple[ConsoleUser, list[ConsoleUser]]:
    """The account and every ops admin, their rows locked in id order (PostgreSQL; a SQLite write transaction
    is exclusive anyway), so two changes that could each leave no admin run one after the other."""
    rows = (await session.execute(
        select(ConsoleUser).where(or_(ConsoleUser.role == OPS_ADMIN, ConsoleUser.id == user_id))
        .order_by(ConsoleUser.id).with_for_update().execution_options(populate_existing=True))).scalars().all()
    user = next((u for u in rows if u.id == user_id), None)
    if user is None:
        raise AccountProblem("no_user", f"no console user with id {user_id}")
    return user, [u for u in rows if u.role == OPS_ADMIN]


def _keep_an_admin(user: ConsoleUser, admins: list[ConsoleUser], what: str) -> None:
    if user.role == OPS_ADMIN and not user.disabled and not any(a.id != user.id and not a.disabled for a in admins):
        raise AccountProblem("last_admin", f"{user.username} is the last active ops_admin: {what} would leave "
                                           "nobody to manage the console; make or enable another ops_admin first")


async def change_role(session: AsyncSession, user_id: int, role: str, group_ids: Sequence[int] = ()) -> str:
    """Give the account another role (and a group admin their groups); the previous role. The last active
    ops admin keeps theirs (AccountProblem("last_admin"))."""
    check_access(role, len(set(group_ids)))
    user, admins = await _lock_for_change(session, user_id)
    old = user.role
    if role != OPS_ADMIN:
        _keep_an_admin(user, admins, f"making them {role}")
    await session.execute(update(ConsoleUser).where(ConsoleUser.id == user_id).values(role=role))  # type: ignore[arg-type]
    await set_user_groups(session, user_id, group_ids if role == GROUP_ADMIN else ())
    return old


async def change_groups(session: AsyncSession, user_id: int, group_ids: Sequence[int]) -> None:
    """Replace a group admin's groups (at least one)."""
    user = await session.get(ConsoleUser, user_id)
    if user is None:
        raise AccountProblem("no_user", f"no console user with id {user_id}")
    if user.role != GROUP_ADMIN:
        raise AccountProblem("not_group_admin", f"{user.username} is a {user.role}, who sees every group; "
                                                "groups are only for group_admin accounts")
    check_access(user.role, len(set(group_ids)))
    await set_user_groups(session, user_id, group_ids)


async def change_disabled(session: AsyncSession, user_id: int, disabled: bool) -> bool:
    """Disable an account (ending its sessions) or enable it again; whether it changed. The last active ops
    admin cannot be disabled (AccountProblem("last_admin"))."""
    user, admins = await _lock_for_change(session, user_id)
    if disabled:
        _keep_an_admin(user, admins, "disabling them")
    changed = user.disabled != disabled
    await set_disabled(session, user_id, disabled)
    return changed


async def missing_groups(session: AsyncSession, group_ids: Sequence[int]) -> list[int]:
    """Those of the ids that name no group."""
    wanted = set(group_ids)
    if not wanted:
        return []
    found = set((await session.execute(select(Group.id).where(Group.id.in_(wanted)))).scalars())  # type: ignore[union-attr]
    return sorted(wanted - found)


async def account(session: AsyncSession, user: ConsoleUser) -> Account:
    group_ids: frozenset[int] | None = None
    if user.role == GROUP_ADMIN:
        rows = await session.execute(select(ConsoleUserGroup.group_id).where(ConsoleUserGroup.user_id == user.id))
        group_ids = frozenset(int(g) for g in rows.scalars())
    return Account(user.id, user.username, user.role, group_ids)  # type: ignore[arg-type]


# -- sessions ---------------------------------------------------------------------------------------


async def create_session(session: AsyncSession, *, token: str, csrf_token: str, user_id: int,
                         lifetime: timedelta, ip: str, user_agent: str) -> None:
    now = utcnow()
    session.add(ConsoleSession(token_hash=token_hash(token), user_id=user_id, csrf_token=csrf_token,
                               created_at=now, expires_at=now + lifetime, last_seen_at=now, ip=ip[:64],
                               user_agent=user_agent[:255]))
    await session.execute(update(ConsoleUser).where(ConsoleUser.id == user_id).values(last_login_at=now))  # type: ignore[arg-type]
    await session.flush()


@dataclass(frozen=True)
class LiveSession:
    token_hash: str
    csrf_token: str
    expires_at: datetime
    last_seen_at: datetime
    account: Account


async def find_session(session: AsyncSession, token: str, *, idle: timedelta | None,
                       now: datetime | None = None) -> LiveSession | None:
    """The live session for a cookie's token: not expired, not idle too long, its user not disabled."""
    now = now or utcnow()
    row = (await session.execute(
        select(ConsoleSession, ConsoleUser).join(ConsoleUser, ConsoleUser.id == ConsoleSession.user_id)  # type: ignore[arg-type]
        .where(ConsoleSession.token_hash == token_hash(token)))).first()
    if row is None:
        return None
    live, user = row
    if live.expires_at <= now or user.disabled or (idle is not None and live.last_seen_at + idle <= now):
        return None
    return LiveSession(live.token_hash, live.csrf_token, live.expires_at, live.last_seen_at,
                       await account(session, user))


async def touch_session(session: AsyncSession, hashed: str, now: datetime | None = None) -> None:
    await session.execute(update(ConsoleSession).where(ConsoleSession.token_hash == hashed)  # type: ignore[arg-type]
                          .values(last_seen_at=now or utcnow()))


async def delete_session(session: AsyncSession, hashed: str) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == hashed))  # type: ignore[arg-type]


async def purge_expired(session: AsyncSession, *, keep_attempts: timedelta, now: datetime | None = None) -> None:
    """Drop expired sessions and login attempts older than the rate limit needs (done at each login)."""
    now = now or utcnow()
    await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))  # type: ignore[arg-type]
    await session.execute(delete(ConsoleLoginAttempt).where(ConsoleLoginAttempt.at < now - keep_attempts))  # type: ignore[arg-type]


# -- login attempts ---------------------------------------------------------------------------------


async def record_attempt(session: AsyncSession, *, username: str, ip: str, success: bool,
                         at: datetime | None = None) -> None:
    session.add(ConsoleLoginAttempt(at=at or utcnow(), username=normalize_username(username), ip=ip[:64],
                                    success=success))
    await session.flush()


async def recent_failures(session: AsyncSession, *, username: str, ip: str, since: datetime
                          ) -> tuple[list[datetime], list[datetime]]:
    """When the failed attempts since `since` were, for this username (since its last success) and this
    address, oldest first."""
    name = normalize_username(username)
    last_success = (await session.execute(
        select(func.max(ConsoleLoginAttempt.at)).where(ConsoleLoginAttempt.username == name,
                                                       ConsoleLoginAttempt.success.is_(True)))).scalar_one_or_none()  # type: ignore[attr-defined]
    rows = await session.execute(
        select(ConsoleLoginAttempt.at, ConsoleLoginAttempt.username, ConsoleLoginAttempt.ip)
        .where(ConsoleLoginAttempt.success.is_(False), ConsoleLoginAttempt.at >= since,  # type: ignore[attr-defined]
               or_(ConsoleLoginAttempt.username == name, ConsoleLoginAttempt.ip == ip[:64]))
        .order_by(ConsoleLoginAttempt.at))
    by_name, by_ip = [], []
    for at, who, where in rows.all():
        at = at if at.tzinfo else at.replace(tzinfo=utcnow().tzinfo)
        if who == name and (last_success is None or at > _aware(last_success)):
            by_name.append(at)
        if where == ip[:64]:
            by_ip.append(at)
    return by_name, by_ip


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=utcnow().tzinfo)
