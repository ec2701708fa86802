"""Scheduled posts: the posts, their runs and deliveries, group tags, per-group limits, and the queries.

What the database guarantees (so several processes behave as one):
- one run per post and scheduled time: `push_runs` has a unique key (post_id, scheduled_at) and a run is
  inserted with ON CONFLICT DO NOTHING; its deliveries (one per target group, unique per run and group)
  are inserted in the same transaction, so a firing is either fully recorded or not at all;
- a delivery is sent by whoever claimed it: a conditional UPDATE sets status 'sending' with a lease
  (on PostgreSQL the candidates are picked with FOR UPDATE SKIP LOCKED, so concurrent workers take
  different rows without waiting; SQLite has one writer at a time). A claim whose holder died is taken
  again when its lease runs out;
- the daily cap is a per-(group, local day) counter incremented with a conditional upsert, so two
  workers cannot both take the last slot;
- `covered_until` on a post says up to when every firing has its run; it only moves forward, and only
  after the runs are committed.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Date,
    Index,
    Text,
    UniqueConstraint,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot.push_spec import Schedule
from storage import fastsql
from storage.db import Database, UTCDateTime, utcnow
from storage.groups import Group, _utc
from storage.upsert import insert_for

# bot.dispatcher.DIRECT_SCOPE: a door's 1:1 scope is no group to post into.
DIRECT_SCOPE = "@direct"

# Post sources.
CONFIG, CLI, CHAT, CONSOLE = "config", "cli", "chat", "console"
# Targets.
GROUPS, TAG, ALL = "groups", "tag", "all"
# Run states.
RUN_SCHEDULED, RUN_SKIPPED = "scheduled", "skipped"
# Delivery states. "awaiting": handed to a door whose posts a person confirms (WeCom customer groups: an
# add_msg_template task the group owner sends); the door records sent or failed (storage.wecom_push).
PENDING, SENDING, SENT, FAILED, SKIPPED, AWAITING = "pending", "sending", "sent", "failed", "skipped", "awaiting"
DELIVERY_STATES = (PENDING, SENDING, SENT, FAILED, SKIPPED, AWAITING)


class PushPost(SQLModel, table=True):
    """A scheduled post: when (schedule in its timezone), where (targets), what (content), on or off."""

    __tablename__ = "push_posts"
    __table_args__ = (
        # A name names one live post (config posts are upserted by it); removed posts keep theirs for history.
        Index("uq_push_posts_live_name", "name", unique=True, sqlite_where=text("removed_at IS NULL"),
              postgresql_where=text("removed_at IS NULL")),
        Index("ix_push_posts_owner_group_id", "owner_group_id"),
        Index("ix_push_posts_campaign_id", "campaign_id"),
        UniqueConstraint("event_id", name="uq_push_posts_event_id"),
        CheckConstraint("schedule_kind IN ('cron', 'interval', 'once')", name="schedule_kind"),
        CheckConstraint("target_kind IN ('groups', 'tag', 'all')", name="target_kind"),
        CheckConstraint("kind IN ('text', 'markdown', 'image', 'news')", name="kind"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str | None = Field(default=None, max_length=64)
    # "config" (declared in the config file), "cli", or "chat" (an admin's command in a group).
    source: str = Field(max_length=16)
    # The schedule as it was written ("每天 9:00", "0 9 * * 1-5"), for lists.
    schedule_text: str = Field(default="", max_length=128)
    schedule_kind: str = Field(max_length=16)
    cron: str | None = Field(default=None, max_length=128)
    interval_seconds: int | None = None
    run_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # IANA zone the schedule is read in.
    timezone: str = Field(max_length=64)
    # A fixed interval counts from here.
    anchor_at: datetime = Field(sa_type=UTCDateTime)
    target_kind: str = Field(max_length=16)
    target_tag: str | None = Field(default=None, max_length=64)
    # Only groups on this door (tag and all targets); None for every door.
    target_channel: str | None = Field(default=None, max_length=32)
    kind: str = Field(default="text", max_length=16)
    content: str = Field(default="", sa_type=Text)
    # JSON: an image ({"url"} or {"base64", "md5"}) or news ({"articles": [...]}); "{}" otherwise.
    payload: str = Field(default="{}", sa_type=Text)
    enabled: bool = True
    # The group whose admins manage it (posts made with the chat command); None for ops' posts.
    owner_group_id: int | None = Field(default=None, foreign_key="groups.id")
    created_by: str = Field(default="", max_length=128)
    # The chat command (inbox event) that created it: a retried event finds it instead of adding another.
    event_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Bumped on every change; each process compares it to rebuild its timer for the post.
    revision: int = 1
    # Every firing up to this time has its run (or was before the post existed or while it was paused).
    covered_until: datetime = Field(sa_type=UTCDateTime)
    removed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The campaign it belongs to, and its phase there (storage.campaign): it fires only on those days. No
    # foreign key (see migration 0013): campaigns are never deleted.
    campaign_id: int | None = None
    phase: str | None = Field(default=None, max_length=16)

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.schedule_kind, cron=self.cron, interval_seconds=self.interval_seconds,
                        run_at=self.run_at)

    @property
    def payload_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.payload or "{}")
        return data


class PushPostGroup(SQLModel, table=True):
    """A listed target group of a post."""

    __tablename__ = "push_post_groups"

    post_id: int = Field(foreign_key="push_posts.id", primary_key=True)
    group_id: int = Field(foreign_key="groups.id", primary_key=True)


class PushRun(SQLModel, table=True):
    """One firing of a post: its scheduled time, whether it was late or skipped, and the content it sends."""

    __tablename__ = "push_runs"
    __table_args__ = (UniqueConstraint("post_id", "scheduled_at", name="uq_push_runs_post_id_scheduled_at"),
                      CheckConstraint("status IN ('scheduled', 'skipped')", name="status"))

    id: int | None = Field(default=None, primary_key=True)
    post_id: int = Field(foreign_key="push_posts.id")
    scheduled_at: datetime = Field(sa_type=UTCDateTime)
    # "scheduled": its deliveries carry on; "skipped": not sent at all (reason, e.g. "missed").
    status: str = Field(default=RUN_SCHEDULED, max_length=16)
    # Recorded after its time (downtime) but within the grace period: sent, marked late.
    late: bool = False
    reason: str = Field(default="", max_length=255)
    # The content as it was when the run fired (later edits do not change what this run sends).
    kind: str = Field(default="text", max_length=16)
    content: str = Field(default="", sa_type=Text)
    payload: str = Field(default="{}", sa_type=Text)
    targets: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The process that recorded it.
    instance: str = Field(default="", max_length=128)


class PushDelivery(SQLModel, table=True):
    """A run's post to one group: the outbox row a worker claims, sends, and records."""

    __tablename__ = "push_deliveries"
    __table_args__ = (
        UniqueConstraint("run_id", "group_id", name="uq_push_deliveries_run_id_group_id"),
        # The claim: due rows of the doors a process has.
        Index("ix_push_deliveries_claim", "channel", "status", "next_attempt_at"),
        Index("ix_push_deliveries_group_id", "group_id"),
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed', 'skipped', 'awaiting')", name="status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="push_runs.id")
    group_id: int = Field(foreign_key="groups.id")
    # The group's door (copied from the group, so the claim needs no join).
    channel: str = Field(max_length=32)
    status: str = Field(default=PENDING, max_length=16)
    # Sends tried (a claim is one); rate-limit and quiet-hours deferrals do not count.
    attempts: int = 0
    # Not to be sent before this (the scheduled time, a retry's backoff, the end of quiet hours).
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    lease_holder: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Why it failed or was skipped; for others the last thing worth knowing (deferred, retried).
    reason: str = Field(default="", sa_type=Text)
    # The group's local day the daily cap counted it on (counted once, given back if it never went out).
    counted_day: date | None = Field(default=None, sa_type=Date)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PushGroupTag(SQLModel, table=True):
    """A tag on a group, for posts that target a tag ("vip", "beijing")."""

    __tablename__ = "push_group_tags"
    __table_args__ = (Index("ix_push_group_tags_tag", "tag"),)

    group_id: int = Field(foreign_key="groups.id", primary_key=True)
    tag: str = Field(max_length=64, primary_key=True)


class PushGroupSettings(SQLModel, table=True):
    """A group's own push limits; None means the config's default."""

    __tablename__ = "push_group_settings"

    group_id: int = Field(foreign_key="groups.id", primary_key=True)
    # "22:00-08:00", "" for none, None for push.quiet_hours.
    quiet_hours: str | None = Field(default=None, max_length=16)
    # Posts per local day; 0 for no cap, None for push.daily_cap.
    daily_cap: int | None = None
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PushDailyCount(SQLModel, table=True):
    """Posts taken out of a group's daily cap on a local day."""

    __tablename__ = "push_daily_counts"

    group_id: int = Field(foreign_key="groups.id", primary_key=True)
    day: date = Field(sa_type=Date, primary_key=True)
    sent: int = 0


class PushWorker(SQLModel, table=True):
    """A process's outbox worker and a door it can send through, with its last heartbeat."""

    __tablename__ = "push_workers"

    holder: str = Field(max_length=128, primary_key=True)
    channel: str = Field(max_length=32, primary_key=True)
    seen_at: datetime = Field(sa_type=UTCDateTime)


# -- posts -----------------------------------------------------------------------------------------------


@dataclass
class PostFields:
    """A post's definition, checked (bot.push_spec), as the CLI, the chat command and the config give it."""

    schedule: Schedule
    timezone: str
    target_kind: str
    content: str
    schedule_text: str = ""
    kind: str = "text"
    payload: dict[str, Any] | None = None
    target_tag: str | None = None
    target_channel: str | None = None
    # Listed targets: group row ids.
    group_ids: tuple[int, ...] = ()
    name: str | None = None
    enabled: bool = True
    # storage.campaign: the campaign and phase it belongs to.
    campaign_id: int | None = None
    phase: str | None = None

    def columns(self) -> dict[str, Any]:
        return {"name": self.name, "schedule_text": self.schedule_text[:128], "schedule_kind": self.schedule.kind, "cron": self.schedule.cron,
                "interval_seconds": self.schedule.interval_seconds, "run_at": self.schedule.run_at,
                "timezone": self.timezone, "target_kind": self.target_kind, "target_tag": self.target_tag,
                "target_channel": self.target_channel, "kind": self.kind, "content": self.content,
                "payload": json.dumps(self.payload or {}, ensure_ascii=False, sort_keys=True),
                "enabled": self.enabled, "campaign_id": self.campaign_id, "phase": self.phase}


def _anchor(now: datetime) -> datetime:
    """Where a fixed interval starts counting: the whole minute (every process computes the same times)."""
    return now.replace(second=0, microsecond=0)


async def create_post(session: AsyncSession, fields: PostFields, *, source: str, created_by: str, now: datetime,
                      owner_group_id: int | None = None, event_id: int | None = None) -> PushPost:
    post = PushPost(**fields.columns(), source=source, created_by=created_by, owner_group_id=owner_group_id,
                    event_id=event_id, anchor_at=_anchor(now), covered_until=now, created_at=now, updated_at=now)
    session.add(post)
    await session.flush()
    for group_id in dict.fromkeys(fields.group_ids):
        session.add(PushPostGroup(post_id=post.id, group_id=group_id))  # type: ignore[arg-type]
    await session.flush()
    return post


async def created_by_event(session: AsyncSession, event_id: int) -> PushPost | None:
    row = await session.execute(select(PushPost).where(PushPost.event_id == event_id))
    return row.scalar_one_or_none()


async def get_post(session: AsyncSession, ref: int | str, *, owner_group_id: int | None = None,
                   include_removed: bool = False) -> PushPost | None:
    """A post by number or (live) name; with `owner_group_id`, only a post that group manages."""
    query = select(PushPost)
    if isinstance(ref, int) or (isinstance(ref, str) and ref.lstrip("#").isdigit()):
        query = query.where(PushPost.id == int(str(ref).lstrip("#")))
    else:
        query = query.where(PushPost.name == ref, PushPost.removed_at.is_(None))  # type: ignore[union-attr]
    if owner_group_id is not None:
        query = query.where(PushPost.owner_group_id == owner_group_id)
    if not include_removed:
        query = query.where(PushPost.removed_at.is_(None))  # type: ignore[union-attr]
    row = await session.execute(query.execution_options(populate_existing=True))
    return row.scalar_one_or_none()


async def list_posts(session: AsyncSession, *, owner_group_id: int | None = None,
                     include_removed: bool = False) -> list[PushPost]:
    query = select(PushPost).order_by(PushPost.id)  # type: ignore[arg-type]
    if owner_group_id is not None:
        query = query.where(PushPost.owner_group_id == owner_group_id)
    if not include_removed:
        query = query.where(PushPost.removed_at.is_(None))  # type: ignore[union-attr]
    return list((await session.execute(query)).scalars())


async def listed_groups(session: AsyncSession, post_id: int) -> list[Group]:
    rows = await session.execute(select(Group).join(PushPostGroup, PushPostGroup.group_id == Group.id)
                                 .where(PushPostGroup.post_id == post_id).order_by(Group.id))
    return list(rows.scalars())


async def set_enabled(session: AsyncSession, post_id: int, enabled: bool, now: datetime) -> bool:
    """Pause or resume; False if nothing changed. Pausing skips the deliveries still waiting; resuming starts
    from now: what fell in the pause is not sent late (it was paused on purpose)."""
    values: dict[str, Any] = {"enabled": enabled, "updated_at": now, "revision": PushPost.revision + 1}
    if enabled:
        values["covered_until"] = case((PushPost.covered_until < now, now), else_=PushPost.covered_until)
    result = await session.execute(
        update(PushPost).where(PushPost.id == post_id, PushPost.enabled.is_(not enabled),  # type: ignore[attr-defined]
                               PushPost.removed_at.is_(None)).values(**values))  # type: ignore[union-attr]
    if result.rowcount and not enabled:
        await _skip_pending(session, post_id, "post paused", now)
    return bool(result.rowcount)


async def _skip_pending(session: AsyncSession, post_id: int, reason: str, now: datetime) -> None:
    """A paused or removed post sends nothing more: its deliveries still waiting (for their time, a retry,
    the end of quiet hours) are skipped with the reason."""
    runs = select(PushRun.id).where(PushRun.post_id == post_id)
    await session.execute(
        update(PushDelivery).where(PushDelivery.run_id.in_(runs), PushDelivery.status == PENDING)  # type: ignore[attr-defined]
        .values(status=SKIPPED, reason=reason, updated_at=now))


async def remove_post(session: AsyncSession, post_id: int, now: datetime) -> bool:
    """Remove a post (its runs and deliveries stay for `qunbot push runs`); pending deliveries are skipped."""
    result = await session.execute(
        update(PushPost).where(PushPost.id == post_id, PushPost.removed_at.is_(None))  # type: ignore[union-attr]
        .values(removed_at=now, enabled=False, updated_at=now, revision=PushPost.revision + 1))
    if not result.rowcount:
        return False
    await _skip_pending(session, post_id, "post removed", now)
    return True


_SCHEDULE_COLUMNS = {"schedule_kind", "cron", "interval_seconds", "run_at", "timezone"}


async def update_post(session: AsyncSession, post_id: int, fields: PostFields, now: datetime) -> PushPost | None:
    """Edit a live post in place (the console's edit): schedule, timezone, targets and content; the caller's
    `fields.enabled`, campaign and phase are ignored (pause and resume have their own calls). A changed
    schedule counts from now: no firing before the edit is sent late. None if the post is gone."""
    post = await get_post(session, post_id)
    if post is None:
        return None
    wanted = fields.columns()
    changed = {k: wanted[k] for k in _COMPARED if k not in ("enabled",) and getattr(post, k) != wanted[k]}
    current_groups = [g.id for g in await listed_groups(session, post_id)]
    groups_changed = sorted(current_groups) != sorted(set(fields.group_ids))
    if not changed and not groups_changed and wanted["name"] == post.name:
        return post
    values: dict[str, Any] = {**changed, "name": wanted["name"], "updated_at": now, "revision": post.revision + 1}
    if _SCHEDULE_COLUMNS & set(changed):
        values["anchor_at"] = _anchor(now)
        values["covered_until"] = case((PushPost.covered_until < now, now), else_=PushPost.covered_until)
    await session.execute(update(PushPost).where(PushPost.id == post_id).values(**values))
    if groups_changed:
        await session.execute(delete(PushPostGroup).where(PushPostGroup.post_id == post_id))
        for group_id in dict.fromkeys(fields.group_ids):
            session.add(PushPostGroup(post_id=post_id, group_id=group_id))
        await session.flush()
    return await get_post(session, post_id)


async def posts_with_groups(session: AsyncSession, *, group_ids: Collection[int] | None,
                            include_removed: bool = False) -> list[tuple[PushPost, list[Group]]]:
    """Posts (oldest first) with their listed target groups. `group_ids` None: every post; else the posts
    those groups manage (`owner_group_id`) or that target listed groups all among them."""
    posts = await list_posts(session, include_removed=include_removed)
    rows = await session.execute(select(PushPostGroup.post_id, Group).join(Group, Group.id == PushPostGroup.group_id)
                                 .where(PushPostGroup.post_id.in_([p.id for p in posts]))  # type: ignore[attr-defined]
                                 .order_by(Group.id))
    listed: dict[int, list[Group]] = {}
    for post_id, group in rows.all():
        listed.setdefault(post_id, []).append(group)
    found = [(post, listed.get(post.id, [])) for post in posts]  # type: ignore[arg-type]
    if group_ids is None:
        return found
    return [(post, groups) for post, groups in found if post_within(post, groups, group_ids)]


def post_within(post: PushPost, groups: list[Group], group_ids: Collection[int]) -> bool:
    """Does a post concern only these groups (a group admin's): managed by one, or targeting only them?"""
    if post.owner_group_id is not None:
        return post.owner_group_id in group_ids
    return post.target_kind == GROUPS and bool(groups) and all(g.id in group_ids for g in groups)


_COMPARED = ("schedule_text", "schedule_kind", "cron", "interval_seconds", "run_at", "timezone", "target_kind", "target_tag",
             "target_channel", "kind", "content", "payload", "enabled")


async def upsert_config_post(session: AsyncSession, fields: PostFields, now: datetime) -> tuple[PushPost, str]:
    """A post declared in the config file, by name: "created", "updated" or "unchanged".

    Every process does this at start; the same declaration changes nothing (no revision bump), so
    processes with one config never disturb each other. A post of that name made elsewhere is taken over.
    """
    assert fields.name
    row = await session.execute(
        select(PushPost).where(PushPost.name == fields.name, PushPost.removed_at.is_(None))  # type: ignore[union-attr]
        .with_for_update())
    post = row.scalar_one_or_none()
    if post is None:
        return await create_post(session, fields, source=CONFIG, created_by="config", now=now), "created"
    wanted = fields.columns()
    current_groups = [g.id for g in await listed_groups(session, post.id)]  # type: ignore[arg-type]
    changed = {k: wanted[k] for k in _COMPARED if getattr(post, k) != wanted[k]}
    groups_changed = sorted(current_groups) != sorted(set(fields.group_ids))
    if not changed and not groups_changed and post.source == CONFIG:
        return post, "unchanged"
    values: dict[str, Any] = {**changed, "source": CONFIG, "updated_at": now, "revision": post.revision + 1}
    if {"schedule_kind", "cron", "interval_seconds", "run_at", "timezone"} & set(changed):
        values["anchor_at"] = _anchor(now)
    if changed.get("enabled") is True:
        values["covered_until"] = now
    await session.execute(update(PushPost).where(PushPost.id == post.id).values(**values))
    if groups_changed:
        await session.execute(delete(PushPostGroup).where(PushPostGroup.post_id == post.id))
        for group_id in dict.fromkeys(fields.group_ids):
            session.add(PushPostGroup(post_id=post.id, group_id=group_id))  # type: ignore[arg-type]
        await session.flush()
    fresh = await get_post(session, post.id)  # type: ignore[arg-type]
    assert fresh is not None
    return fresh, "updated"


async def remove_config_posts_except(session: AsyncSession, names: set[str], now: datetime) -> list[str]:
    """Config posts no longer declared are removed (their history stays); the names removed."""
    rows = await session.execute(select(PushPost).where(PushPost.source == CONFIG,
                                                        PushPost.removed_at.is_(None)))  # type: ignore[union-attr]
    gone = [post for post in rows.scalars() if post.name not in names]
    for post in gone:
        await remove_post(session, post.id, now)  # type: ignore[arg-type]
    return [post.name or str(post.id) for post in gone]


async def live_posts(db: Database) -> list[PushPost]:
    """Every enabled post (each process keeps one timer per post, rebuilt when `revision` changes)."""
    async with db.read_session() as session:
        rows = await session.execute(select(PushPost).where(PushPost.enabled.is_(True),  # type: ignore[attr-defined]
                                                            PushPost.removed_at.is_(None)))  # type: ignore[union-attr]
        return list(rows.scalars())


async def advance_coverage(db: Database, post_id: int, until: datetime) -> None:
    """Every firing up to `until` has its run now (never moves back)."""
    async with db.session() as session:
        await session.execute(update(PushPost).where(PushPost.id == post_id, PushPost.covered_until < until)
                              .values(covered_until=until))


# -- group tags and limits -------------------------------------------------------------------------------


async def add_tag(session: AsyncSession, group_id: int, tag: str) -> bool:
    result = await session.execute(insert_for(session, PushGroupTag).values(group_id=group_id, tag=tag)
                                   .on_conflict_do_nothing(index_elements=["group_id", "tag"]))
    return bool(result.rowcount)


async def remove_tag(session: AsyncSession, group_id: int, tag: str) -> bool:
    result = await session.execute(delete(PushGroupTag).where(PushGroupTag.group_id == group_id,
                                                              PushGroupTag.tag == tag))
    return bool(result.rowcount)


async def tagged(session: AsyncSession, tag: str | None = None) -> list[tuple[str, Group]]:
    """(tag, group) pairs, by tag then group."""
    query = (select(PushGroupTag.tag, Group).join(Group, Group.id == PushGroupTag.group_id)
             .order_by(PushGroupTag.tag, Group.channel, Group.external_id))
    if tag is not None:
        query = query.where(PushGroupTag.tag == tag)
    return [(t, g) for t, g in (await session.execute(query)).all()]


async def group_tags(session: AsyncSession, group_id: int) -> list[str]:
    """A group's tags, sorted."""
    rows = await session.execute(select(PushGroupTag.tag).where(PushGroupTag.group_id == group_id)
                                 .order_by(PushGroupTag.tag))
    return list(rows.scalars())


async def group_settings(session: AsyncSession, group_id: int) -> PushGroupSettings | None:
    return await session.get(PushGroupSettings, group_id)


async def delivery_group(db: Database, group_id: int) -> tuple[Group | None, PushGroupSettings | None]:
    """The group a delivery goes to and its own push limits, in one read. The outbox runs this for every
    delivery, so it skips the ORM's query layers (storage.fastsql); the rows are built without the ORM's
    instrumentation: read them, don't add them to a session."""
    rows = await fastsql.fetch(db, "SELECT g.id, g.channel, g.external_id, g.name, g.owner, g.timezone, g.created_at, "
                                   "g.dismissed_at, s.group_id, s.quiet_hours, s.daily_cap, s.updated_at FROM groups g "
                                   "LEFT JOIN push_group_settings s ON s.group_id = g.id WHERE g.id = ?", [group_id])
    if not rows:
        return None, None
    gid, channel, external, name, owner, tz, created, dismissed, sid, quiet, cap, updated = rows[0]
    group = Group.model_construct(id=gid, channel=channel, external_id=external, name=name, owner=owner, timezone=tz,
                                  created_at=_utc(created), dismissed_at=_utc(dismissed))
    settings = (None if sid is None else
                PushGroupSettings.model_construct(group_id=sid, quiet_hours=quiet, daily_cap=cap, updated_at=_utc(updated)))
    return group, settings


async def set_group_settings(session: AsyncSession, group_id: int, now: datetime, **values: Any) -> None:
    """Set `quiet_hours` and/or `daily_cap` for a group (None: back to the config's default)."""
    stmt = insert_for(session, PushGroupSettings).values(group_id=group_id, updated_at=now, **values)
    await session.execute(stmt.on_conflict_do_update(index_elements=["group_id"], set_={**values, "updated_at": now}))


# -- runs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocked:
    """Doors that cannot take a post at all: channel → reason. Other doors' deliveries wait for a process
    that has the door."""

    by_channel: dict[str, str]


async def record_run(session: AsyncSession, post: PushPost, scheduled_at: datetime, *, now: datetime,
                     late: bool = False, skipped: str | None = None, blocked: Blocked | None = None,
                     instance: str = "") -> int | None:
    """Record one firing and, unless `skipped` gives the reason it is not sent, one delivery per target group,
    in the caller's transaction. None if that firing was already recorded (by any process), or if it falls
    outside its campaign's days (a campaign post fires only within its phase: storage.campaign)."""
    if post.campaign_id is not None:
        from storage.campaign import fires_within

        if not await fires_within(session, post.campaign_id, post.phase, scheduled_at):
            return None
    values = {"post_id": post.id, "scheduled_at": scheduled_at, "status": RUN_SKIPPED if skipped else RUN_SCHEDULED,
              "late": late and not skipped, "reason": skipped or ("late" if late else ""), "kind": post.kind,
              "content": post.content, "payload": post.payload, "created_at": now, "instance": instance[:128]}
    stmt = (insert_for(session, PushRun).values(**values)
            .on_conflict_do_nothing(index_elements=["post_id", "scheduled_at"]).returning(PushRun.id))
    run_id = (await session.execute(stmt)).scalar_one_or_none()
    if run_id is None or skipped:
        return run_id
    targets = target_conditions(post)
    whens: list[tuple[Any, str]] = [(Group.dismissed_at.is_not(None), "group dismissed")]  # type: ignore[union-attr]
    if blocked is not None:
        whens += [(Group.channel == channel, reason) for channel, reason in blocked.by_channel.items() if reason]
    status = case(*[(cond, literal(SKIPPED)) for cond, _ in whens], else_=literal(PENDING))
    reason = case(*[(cond, literal(why)) for cond, why in whens], else_=literal("late" if late else ""))
    source = select(literal(run_id), Group.id, Group.channel, status, reason, literal(0),
                    literal(scheduled_at, UTCDateTime), literal(now, UTCDateTime)).where(*targets)
    columns = ["run_id", "group_id", "channel", "status", "reason", "attempts", "next_attempt_at", "updated_at"]
    await session.execute(insert(PushDelivery).from_select(columns, source))
    count = (await session.execute(select(func.count()).select_from(PushDelivery)
                                   .where(PushDelivery.run_id == run_id))).scalar_one()
    await session.execute(update(PushRun).where(PushRun.id == run_id).values(
        targets=count, reason=values["reason"] if count else "no target groups"))
    return run_id


def target_conditions(post: PushPost) -> list[Any]:
    """WHERE conditions on groups for the post's targets: listed groups (even dismissed ones, which are
    recorded as skipped), or the live groups with the tag, or all live groups (never a door's 1:1 scope)."""
    if post.target_kind == GROUPS:
        return [Group.id.in_(select(PushPostGroup.group_id).where(PushPostGroup.post_id == post.id))]  # type: ignore[union-attr]
    conditions: list[Any] = [Group.dismissed_at.is_(None), Group.external_id != DIRECT_SCOPE]  # type: ignore[union-attr]
    if post.target_channel:
        conditions.append(Group.channel == post.target_channel)
    if post.target_kind == TAG:
        conditions.append(Group.id.in_(select(PushGroupTag.group_id).where(PushGroupTag.tag == post.target_tag)))  # type: ignore[union-attr]
    return conditions


# -- the outbox ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: int
    run_id: int
    group_id: int
    channel: str
    attempts: int
    counted_day: date | None


def _due(now: datetime) -> Any:
    return or_(and_(PushDelivery.status == PENDING, PushDelivery.next_attempt_at <= now),  # type: ignore[arg-type]
               and_(PushDelivery.status == SENDING, PushDelivery.lease_until < now))  # type: ignore[operator]


async def anything_due(db: Database, channels: list[str], now: datetime) -> bool:
    """Is a delivery due on these doors? A read (no write lock on SQLite) before trying to claim."""
    if not channels:
        return False
    async with db.read_session() as session:
        found = await session.execute(select(PushDelivery.id).where(
            PushDelivery.channel.in_(channels), _due(now)).limit(1))  # type: ignore[attr-defined]
        return found.first() is not None


async def claim(db: Database, *, channels: list[str], holder: str, now: datetime, lease_seconds: float,
                limit: int) -> list[Claimed]:
    """Take up to `limit` due deliveries on these doors (oldest first), each with a lease: pending ones whose
    time has come, and 'sending' ones whose holder's lease ran out (it died mid-send)."""
    if not channels or limit <= 0:
        return []
    async with db.session() as session:
        candidates = (select(PushDelivery.id)
                      .where(PushDelivery.channel.in_(channels), _due(now))  # type: ignore[attr-defined]
                      .order_by(PushDelivery.next_attempt_at, PushDelivery.id).limit(limit))  # type: ignore[arg-type]
        if db.dialect == "postgresql":
            # Picked once, in a CTE: as a plain IN (subquery) the planner may run the subquery again for each
            # row it updates, and then the LIMIT bounds nothing (a fresh run's 1,000 deliveries were claimed
            # by one call: bench/push_fanout.py).
            picked = candidates.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
            chosen: Any = select(picked.c.id).scalar_subquery()
        else:
            chosen = candidates.scalar_subquery()
        stmt = (update(PushDelivery)
                .where(PushDelivery.id.in_(chosen), _due(now))  # type: ignore[union-attr]
                .values(status=SENDING, lease_holder=holder, lease_until=now + timedelta(seconds=lease_seconds),
                        attempts=PushDelivery.attempts + 1, updated_at=now)
                .returning(PushDelivery.id, PushDelivery.run_id, PushDelivery.group_id, PushDelivery.channel,
                           PushDelivery.attempts, PushDelivery.counted_day))
        rows = (await session.execute(stmt)).all()
    return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)


# The outcome writes below run for every delivery: driver-level statements (storage.fastsql), each one round
# trip without the ORM's per-statement cost, which dominated a large fan-out (bench/push_fanout.py).
_OURS = "WHERE id = ? AND lease_holder = ? AND status = 'sending'"


async def finish(db: Database, delivery_id: int, holder: str, *, status: str, reason: str | None, now: datetime,
                 release_day: bool = False) -> bool:
    """Record the outcome of a claimed delivery (only its holder may); False if the claim was lost.
    `reason` None keeps the delivery's last note (late, deferred, retried); `release_day` gives the
    daily-cap slot back (it never went out)."""
    sets = ["status = ?", "lease_holder = NULL", "lease_until = NULL", "updated_at = ?"]
    params: list[Any] = [status, now]
    if reason is not None:
        sets.append("reason = ?")
        params.append(reason[:2000])
    if status == SENT:
        sets.append("sent_at = ?")
        params.append(now)
    if release_day:
        sets.append("counted_day = NULL")
    sql = f"UPDATE push_deliveries SET {', '.join(sets)} {_OURS} RETURNING id"  # noqa: S608 - constant text
    params += [delivery_id, holder]
    if not release_day:
        return bool(await fastsql.fetch(db, sql, params))
    async with fastsql.transaction(db) as fetch:
        await fetch("UPDATE push_daily_counts SET sent = sent - 1 WHERE sent > 0 AND (group_id, day) = "  # noqa: S608
                    f"(SELECT group_id, counted_day FROM push_deliveries {_OURS})", [delivery_id, holder])
        return bool(await fetch(sql, params))


async def retry_later(db: Database, delivery_id: int, holder: str, *, at: datetime, reason: str, now: datetime,
                      counts: bool = True) -> bool:
    """Put a claimed delivery back for `at`. `counts=False`: this try was no attempt (deferred, throttled)."""
    attempts = "" if counts else ", attempts = attempts - 1"
    rows = await fastsql.fetch(
        db, "UPDATE push_deliveries SET status = 'pending', next_attempt_at = ?, reason = ?, lease_holder = NULL, "  # noqa: S608
            f"lease_until = NULL, updated_at = ?{attempts} {_OURS} RETURNING id",
        [at, reason[:2000], now, delivery_id, holder])
    return bool(rows)


async def take_day_slot(db: Database, delivery_id: int, holder: str, group_id: int, day: date, cap: int) -> bool:
    """Count a claimed delivery against its group's cap for `day` (once); False if the cap is reached."""
    below_cap = " WHERE push_daily_counts.sent < ?" if cap > 0 else ""
    async with fastsql.transaction(db) as fetch:
        taken = await fetch("INSERT INTO push_daily_counts (group_id, day, sent) VALUES (?, ?, 1) "  # noqa: S608
                            "ON CONFLICT (group_id, day) DO UPDATE SET sent = push_daily_counts.sent + 1"
                            f"{below_cap} RETURNING sent", [group_id, day, *([cap] if cap > 0 else [])])
        if not taken:
            return False
        await fetch("UPDATE push_deliveries SET counted_day = ? WHERE id = ? AND lease_holder = ?",
                    [day, delivery_id, holder])
        return True


async def heartbeat(db: Database, holder: str, channels: list[str], now: datetime) -> None:
    """This process's worker is alive and sends through these doors."""
    async with db.session() as session:
        for channel in channels:
            stmt = insert_for(session, PushWorker).values(holder=holder, channel=channel, seen_at=now)
            await session.execute(stmt.on_conflict_do_update(index_elements=["holder", "channel"],
                                                             set_={"seen_at": now}))
        await session.execute(delete(PushWorker).where(PushWorker.seen_at < now - timedelta(days=1)))


async def leave(db: Database, holder: str) -> None:
    async with db.session() as session:
        await session.execute(delete(PushWorker).where(PushWorker.holder == holder))


async def skip_unserved(db: Database, *, now: datetime, alive_since: datetime, waited: float) -> int:
    """Deliveries that waited `waited` seconds past their time on a door no live worker has: skipped with the
    reason (a process lacking a door leaves its deliveries to one that has it, for that long)."""
    async with db.session() as session:
        served = select(PushWorker.channel).where(PushWorker.seen_at >= alive_since)
        stale = now - timedelta(seconds=waited)
        rows = (await session.execute(
            select(PushDelivery.id, PushDelivery.channel)
            .where(PushDelivery.status == PENDING, PushDelivery.next_attempt_at < stale,  # type: ignore[arg-type]
                   PushDelivery.channel.not_in(served)).limit(1000))).all()  # type: ignore[attr-defined]
        for channel in {c for _, c in rows}:
            ids = [i for i, c in rows if c == channel]
            await session.execute(
                update(PushDelivery).where(PushDelivery.id.in_(ids), PushDelivery.status == PENDING)  # type: ignore[union-attr]
                .values(status=SKIPPED, updated_at=now,
                        reason=f"no running process has the {channel} door enabled (waited {waited:g} s)"))
        return len(rows)


# -- reading back ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryView:
    id: int
    run_id: int
    channel: str
    group: str
    group_name: str
    status: str
    attempts: int
    reason: str
    sent_at: datetime | None
    next_attempt_at: datetime


async def runs_of(session: AsyncSession, post_id: int | None = None, *, limit: int = 50) -> list[tuple[PushRun, PushPost]]:
    """The latest runs (newest first), with their posts."""
    query = (select(PushRun, PushPost).join(PushPost, PushPost.id == PushRun.post_id)
             .order_by(PushRun.scheduled_at.desc(), PushRun.id.desc()).limit(limit))  # type: ignore[attr-defined]
    if post_id is not None:
        query = query.where(PushRun.post_id == post_id)
    return [(r, p) for r, p in (await session.execute(query)).all()]


async def deliveries_of(session: AsyncSession, run_ids: list[int]) -> list[DeliveryView]:
    if not run_ids:
        return []
    rows = await session.execute(
        select(PushDelivery, Group.external_id, Group.name).join(Group, Group.id == PushDelivery.group_id)
        .where(PushDelivery.run_id.in_(run_ids)).order_by(PushDelivery.run_id, PushDelivery.id))  # type: ignore[attr-defined]
    return [DeliveryView(d.id, d.run_id, d.channel, ext, name, d.status, d.attempts, d.reason, d.sent_at,
                         d.next_attempt_at) for d, ext, name in rows.all()]


async def delivery_counts(session: AsyncSession, post_id: int | None = None) -> dict[str, int]:
    """Deliveries by state (of one post, or of all)."""
    query = select(PushDelivery.status, func.count()).group_by(PushDelivery.status)
    if post_id is not None:
        query = query.where(PushDelivery.run_id.in_(select(PushRun.id).where(PushRun.post_id == post_id)))  # type: ignore[attr-defined]
    return {status: int(n) for status, n in (await session.execute(query)).all()}


async def run_counts(session: AsyncSession, post_id: int | None = None) -> dict[str, int]:
    """Runs: all, late, skipped."""
    query = select(func.count(), func.coalesce(func.sum(case((PushRun.late.is_(True), 1), else_=0)), 0),  # type: ignore[attr-defined]
                   func.coalesce(func.sum(case((PushRun.status == RUN_SKIPPED, 1), else_=0)), 0))
    if post_id is not None:
        query = query.where(PushRun.post_id == post_id)
    total, late, skipped = (await session.execute(query)).one()
    return {"runs": int(total), "late": int(late), "skipped": int(skipped)}
