"""FAQ storage: entries (global or per group), a revision per scope, answer cooldowns, unanswered questions.

Every change to a scope's entries bumps that scope's revision in the same transaction, so each process can
tell with one primary-key lookup whether its in-memory index is stale. Cooldowns are claimed with one
atomic upsert: of two processes answering the same entry in the same group at the same moment, one wins.
The console's daily counts (faq_daily_counts) and the unanswered log count each inbox event once: its id is
the key of the counts (faq_counted_events), written in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Date, Index, UniqueConstraint, delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import Database, UTCDateTime, utcnow
from storage.groups import Group
from storage.upsert import insert_for

# The revision scope of global entries (a group's scope is its id, and ids start at 1).
GLOBAL_SCOPE = 0
ANSWER = "answer"
SUGGEST = "suggest"
ALIAS_SEPARATOR = "|"


class FaqEntry(SQLModel, table=True):
    """A question with its answer and other ways to ask it; group_id None means every group."""

    __tablename__ = "faq_entries"
    __table_args__ = (
        Index("uq_faq_entries_global_question", "question_key", unique=True,
              sqlite_where=text("group_id IS NULL"), postgresql_where=text("group_id IS NULL")),
        Index("uq_faq_entries_group_question", "group_id", "question_key", unique=True,
              sqlite_where=text("group_id IS NOT NULL"), postgresql_where=text("group_id IS NOT NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    group_id: int | None = Field(default=None, foreign_key="groups.id")
    question: str = Field(max_length=255)
    # The question without case, spaces, punctuation or emoji: one entry per key and scope.
    question_key: str = Field(max_length=255)
    answer: str
    # Other ways members ask it, "|"-separated.
    aliases: str = ""
    # Who wrote it last: a platform user id from chat, "cli:<os user>" from the command line.
    updated_by: str = Field(default="", max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    @property
    def alias_list(self) -> tuple[str, ...]:
        return tuple(a for a in self.aliases.split(ALIAS_SEPARATOR) if a)


class FaqRevision(SQLModel, table=True):
    """A counter per scope (GLOBAL_SCOPE or a group id), bumped by every change to its entries."""

    __tablename__ = "faq_revisions"

    scope: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    revision: int = 0


class FaqCooldown(SQLModel, table=True):
    """When an entry was last answered (or suggested) in a group, and for which event."""

    __tablename__ = "faq_cooldowns"

    group_id: int = Field(foreign_key="groups.id", primary_key=True)
    # "" in a group; in a 1:1 scope, the member the bot talks to (each conversation has its own cooldown).
    audience: str = Field(default="", max_length=128, primary_key=True)
    entry_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    kind: str = Field(default=ANSWER, max_length=16, primary_key=True)
    answered_at: datetime = Field(sa_type=UTCDateTime)
    # The event that claimed it: a retry of the same event may answer again.
    event_ref: str = Field(max_length=255)


class FaqUnanswered(SQLModel, table=True):
    """Questions the bot could not answer in a group, grouped by their meaningful words."""

    __tablename__ = "faq_unanswered"
    __table_args__ = (UniqueConstraint("group_id", "cluster_key"),)

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id")
    cluster_key: str = Field(max_length=255)
    # The latest wording, as a member wrote it.
    sample: str = Field(max_length=500)
    count: int = 1
    first_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_event_ref: str = Field(default="", max_length=255)


# Which entries a group's members are answered from (FaqGroupSettings.scope).
SCOPE_ALL = "all"  # the group's own entries and the global ones it does not override (the default)
SCOPE_GROUP = "group"  # the group's own entries only
SCOPE_GLOBAL = "global"  # the global entries only
SCOPE_OFF = "off"  # no FAQ answers in this group
SCOPES = (SCOPE_ALL, SCOPE_GROUP, SCOPE_GLOBAL, SCOPE_OFF)


class FaqGroupSettings(SQLModel, table=True):
    """A group's FAQ scope; no row means SCOPE_ALL."""

    __tablename__ = "faq_group_settings"

    group_id: int = Field(foreign_key="groups.id", primary_key=True)
    scope: str = Field(default=SCOPE_ALL, max_length=16)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class FaqDailyCount(SQLModel, table=True):
    """Per group and local day: questions answered, offered suggestions, and left without an answer."""

    __tablename__ = "faq_daily_counts"
    __table_args__ = (Index("ix_faq_daily_counts_day", "day"),)

    group_id: int = Field(foreign_key="groups.id", primary_key=True)
    day: date = Field(sa_type=Date, primary_key=True)
    answered: int = 0
    suggested: int = 0
    # Questions (they look like one) that got no answer, whether or not suggestions were offered.
    unanswered: int = 0


class FaqCountedEvent(SQLModel, table=True):
    """An inbox event whose FAQ outcome is already in faq_daily_counts (and faq_unanswered).

    The idempotency key of the counts: it is inserted in the transaction that adds them, so an event
    processed again (its lease ran out after the FAQ counted but before the inbox marked it done) finds
    its key and adds nothing.
    """

    __tablename__ = "faq_counted_events"

    event_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    counted_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


async def group_scope(session: AsyncSession, group_id: int) -> str:
    """The group's FAQ scope (SCOPE_ALL when never set)."""
    row = await session.get(FaqGroupSettings, group_id, populate_existing=True)
    return row.scope if row is not None else SCOPE_ALL


async def set_group_scope(session: AsyncSession, group_id: int, scope: str) -> str:
    """Set a group's FAQ scope; returns the previous one. Raises ValueError for an unknown scope."""
    if scope not in SCOPES:
        raise ValueError(f"unknown FAQ scope {scope!r}; use one of {', '.join(SCOPES)}")
    before = await group_scope(session, group_id)
    stmt = insert_for(session, FaqGroupSettings).values(group_id=group_id, scope=scope, updated_at=utcnow())
    await session.execute(stmt.on_conflict_do_update(index_elements=["group_id"],
                                                     set_={"scope": scope, "updated_at": utcnow()}))
    return before


async def count_event(session: AsyncSession, *, event_id: int | None, group_id: int, day: date, answered: int = 0,
                      suggested: int = 0, unanswered: int = 0) -> bool:
    """Count one event's FAQ outcome in its group's local day, exactly once per inbox event.

    The event's key (faq_counted_events) is inserted first, ON CONFLICT DO NOTHING, in the caller's
    transaction: only the attempt that inserts it adds the counts, so a retried event (or two processes
    finishing the same event) counts once, on SQLite and PostgreSQL alike. False when the event was
    counted before: the caller skips whatever else it counts per event (the unanswered log). An event
    without an inbox id (dispatched directly) is counted without a key.
    """
    if event_id is not None:
        stmt = insert_for(session, FaqCountedEvent).values(event_id=event_id, counted_at=utcnow())
        if not (await session.execute(stmt.on_conflict_do_nothing(index_elements=["event_id"]))).rowcount:
            return False
    await count_daily(session, group_id=group_id, day=day, answered=answered, suggested=suggested,
                      unanswered=unanswered)
    return True


async def count_daily(session: AsyncSession, *, group_id: int, day: date, answered: int = 0, suggested: int = 0,
                      unanswered: int = 0) -> None:
    """Add to a group's FAQ counts of a local day (atomic; created on first use). Not idempotent: the FAQ
    handler counts through count_event."""
    table = FaqDailyCount.__table__.c  # type: ignore[attr-defined]
    stmt = insert_for(session, FaqDailyCount).values(group_id=group_id, day=day, answered=answered,
                                                     suggested=suggested, unanswered=unanswered)
    await session.execute(stmt.on_conflict_do_update(index_elements=["group_id", "day"], set_={
        "answered": table.answered + answered, "suggested": table.suggested + suggested,
        "unanswered": table.unanswered + unanswered}))


def scope_of(group_id: int | None) -> int:
    return GLOBAL_SCOPE if group_id is None else group_id


async def bump_revision(session: AsyncSession, group_id: int | None) -> None:
    """Mark a scope's entries changed (atomic increment, created on first change)."""
    stmt = insert_for(session, FaqRevision).values(scope=scope_of(group_id), revision=1)
    stmt = stmt.on_conflict_do_update(index_elements=["scope"],
                                      set_={"revision": FaqRevision.__table__.c.revision + 1})
    await session.execute(stmt)


async def revisions(session: AsyncSession, scopes: Sequence[int]) -> dict[int, int]:
    """{scope: revision} for the given scopes (a scope never changed is 0)."""
    rows = await session.execute(select(FaqRevision.scope, FaqRevision.revision)
                                 .where(FaqRevision.scope.in_(scopes)))  # type: ignore[attr-defined]
    found = dict(rows.all())
    return {scope: int(found.get(scope, 0)) for scope in scopes}


async def entries_in_scope(session: AsyncSession, group_id: int | None) -> list[FaqEntry]:
    """The entries of one scope only (global when group_id is None), oldest first."""
    condition = FaqEntry.group_id.is_(None) if group_id is None else FaqEntry.group_id == group_id  # type: ignore[union-attr]
    rows = await session.execute(select(FaqEntry).where(condition).order_by(FaqEntry.id))  # type: ignore[arg-type]
    return list(rows.scalars())


@dataclass(frozen=True)
class SaveResult:
    entry: FaqEntry
    created: bool
    changed: bool


async def save_entry(session: AsyncSession, *, group_id: int | None, question: str, question_key: str,
                     answer: str, aliases: Sequence[str], by: str = "") -> SaveResult:
    """Add an entry, or update the one with the same question in that scope (an upsert by question)."""
    now = utcnow()
    alias_text = ALIAS_SEPARATOR.join(aliases)
    existing = await find_by_key(session, group_id, question_key)
    if existing is not None:
        if (existing.question, existing.answer, existing.aliases) == (question, answer, alias_text):
            return SaveResult(existing, False, False)
        existing.question, existing.answer, existing.aliases = question, answer, alias_text
        existing.updated_by, existing.updated_at = by, now
        await session.flush()
        await bump_revision(session, group_id)
        return SaveResult(existing, False, True)
    where = text("group_id IS NULL") if group_id is None else text("group_id IS NOT NULL")
    columns = ["question_key"] if group_id is None else ["group_id", "question_key"]
    stmt = insert_for(session, FaqEntry).values(
        group_id=group_id, question=question, question_key=question_key, answer=answer, aliases=alias_text,
        updated_by=by, created_at=now, updated_at=now,
    ).on_conflict_do_update(index_elements=columns, index_where=where,
                            set_={"question": question, "answer": answer, "aliases": alias_text,
                                  "updated_by": by, "updated_at": now})
    await session.execute(stmt)
    await bump_revision(session, group_id)
    entry = await find_by_key(session, group_id, question_key)
    assert entry is not None
    return SaveResult(entry, True, True)


async def find_by_key(session: AsyncSession, group_id: int | None, question_key: str) -> FaqEntry | None:
    condition = FaqEntry.group_id.is_(None) if group_id is None else FaqEntry.group_id == group_id  # type: ignore[union-attr]
    row = await session.execute(select(FaqEntry).where(condition, FaqEntry.question_key == question_key)
                                .execution_options(populate_existing=True))
    return row.scalar_one_or_none()


async def get_entry(session: AsyncSession, entry_id: int) -> FaqEntry | None:
    return await session.get(FaqEntry, entry_id, populate_existing=True)


async def remove_entry(session: AsyncSession, entry: FaqEntry) -> None:
    """Delete an entry and its cooldowns, and mark its scope changed."""
    await session.execute(delete(FaqCooldown).where(FaqCooldown.entry_id == entry.id))
    await session.execute(delete(FaqEntry).where(FaqEntry.id == entry.id))
    await bump_revision(session, entry.group_id)


async def visible_entries(session: AsyncSession, group_id: int) -> list[FaqEntry]:
    """What members of a group can be answered from: its own entries, and the global ones it does not
    override (same question), group entries first."""
    own = await entries_in_scope(session, group_id)
    keys = {e.question_key for e in own}
    return own + [e for e in await entries_in_scope(session, None) if e.question_key not in keys]


async def claim_cooldown(session: AsyncSession, *, group_id: int, audience: str, entry_id: int, kind: str,
                         event_ref: str, cooldown: timedelta, now: datetime | None = None) -> bool:
    """True if this event may post the entry now (and records it); False while the cooldown runs.

    One atomic statement: concurrent claims for the same entry and group let exactly one through; the
    same event claiming again (a retry after a failed delivery) is let through again.
    """
    now = now or utcnow()
    table = FaqCooldown.__table__.c
    stmt = insert_for(session, FaqCooldown).values(
        group_id=group_id, audience=audience, entry_id=entry_id, kind=kind, answered_at=now, event_ref=event_ref)
    stmt = stmt.on_conflict_do_update(
        index_elements=["group_id", "audience", "entry_id", "kind"],
        set_={"answered_at": now, "event_ref": event_ref},
        where=or_(table.answered_at <= now - cooldown, table.event_ref == event_ref),
    )
    return bool((await session.execute(stmt)).rowcount)


async def log_unanswered(session: AsyncSession, *, group_id: int, cluster_key: str, sample: str,
                         event_ref: str, at: datetime | None = None) -> None:
    """Count an unanswered question under its cluster (a retried event is not counted twice in a row)."""
    at = at or utcnow()
    table = FaqUnanswered.__table__.c
    stmt = insert_for(session, FaqUnanswered).values(
        group_id=group_id, cluster_key=cluster_key, sample=sample[:500], count=1, first_seen=at, last_seen=at,
        last_event_ref=event_ref)
    stmt = stmt.on_conflict_do_update(
        index_elements=["group_id", "cluster_key"],
        set_={"count": table["count"] + 1, "sample": sample[:500], "last_seen": at, "last_event_ref": event_ref},
        where=table.last_event_ref != event_ref,
    )
    await session.execute(stmt)


@dataclass(frozen=True)
class UnansweredRow:
    channel: str
    group: str
    group_name: str
    cluster_key: str
    sample: str
    count: int
    first_seen: datetime
    last_seen: datetime


async def unanswered(session: AsyncSession, *, group_id: int | None = None, limit: int = 50) -> list[UnansweredRow]:
    """Unanswered questions, most asked first (then most recent)."""
    query = (select(Group.channel, Group.external_id, Group.name, FaqUnanswered.cluster_key, FaqUnanswered.sample,
                    FaqUnanswered.count, FaqUnanswered.first_seen, FaqUnanswered.last_seen)
             .join(Group, Group.id == FaqUnanswered.group_id)  # type: ignore[arg-type]
             .order_by(FaqUnanswered.count.desc(), FaqUnanswered.last_seen.desc())  # type: ignore[attr-defined]
             .limit(limit))
    if group_id is not None:
        query = query.where(FaqUnanswered.group_id == group_id)
    return [UnansweredRow(*row) for row in (await session.execute(query)).all()]


# -- what the console lists ----------------------------------------------------------------------------


class DuplicateQuestion(ValueError):
    """Another entry of the same scope already has this question."""

    def __init__(self, other: FaqEntry) -> None:
        super().__init__(f"entry #{other.id} of that scope already asks {other.question!r}")
        self.other = other


def _like(text_: str) -> str:
    return "%" + text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def find_entries(session: AsyncSession, *, group_ids: Collection[int] | None, include_global: bool = True,
                       search: str = "", offset: int = 0, limit: int = 50) -> tuple[list[tuple[FaqEntry, Group | None]], int]:
    """Entries with their group (None: global), global ones first, then by group and number, and how many
    there are. `group_ids` None: every group's entries; else only those groups'. `search` is looked for in the
    question, the answer and the aliases."""
    scopes = []
    if include_global:
        scopes.append(FaqEntry.group_id.is_(None))  # type: ignore[union-attr]
    if group_ids is None:
        scopes.append(FaqEntry.group_id.is_not(None))  # type: ignore[union-attr]
    elif group_ids:
        scopes.append(FaqEntry.group_id.in_(sorted(group_ids)))  # type: ignore[union-attr]
    if not scopes:
        return [], 0
    conditions = [or_(*scopes)]
    if search.strip():
        like = _like(search.strip())
        conditions.append(or_(*(col.ilike(like, escape="\\") for col in  # type: ignore[attr-defined]
                                (FaqEntry.question, FaqEntry.answer, FaqEntry.aliases))))
    total = (await session.execute(select(func.count()).select_from(FaqEntry).where(*conditions))).scalar_one()
    rows = await session.execute(
        select(FaqEntry, Group).outerjoin(Group, Group.id == FaqEntry.group_id)  # type: ignore[arg-type]
        .where(*conditions)
        .order_by(FaqEntry.group_id.is_not(None), FaqEntry.group_id, FaqEntry.id)  # type: ignore[union-attr]
        .offset(offset).limit(limit))
    return [(entry, group) for entry, group in rows.all()], int(total)


async def update_entry(session: AsyncSession, entry: FaqEntry, *, question: str, question_key: str, answer: str,
                       aliases: Sequence[str], by: str = "") -> bool:
    """Change an entry in place (its scope stays); False if nothing changed. DuplicateQuestion if another entry
    of the scope has the new question."""
    alias_text = ALIAS_SEPARATOR.join(aliases)
    if (entry.question, entry.answer, entry.aliases) == (question, answer, alias_text):
        return False
    if question_key != entry.question_key:
        other = await find_by_key(session, entry.group_id, question_key)
        if other is not None and other.id != entry.id:
            raise DuplicateQuestion(other)
    entry.question, entry.question_key, entry.answer, entry.aliases = question, question_key, answer, alias_text
    entry.updated_by, entry.updated_at = by, utcnow()
    session.add(entry)
    await session.flush()
    await bump_revision(session, entry.group_id)
    return True


async def unanswered_clusters(session: AsyncSession, *, group_ids: Collection[int] | None, group_id: int | None = None,
                              limit: int = 50) -> list[tuple[FaqUnanswered, Group]]:
    """Unanswered-question clusters with their group, most asked first (then most recent); `group_ids` None:
    every group's."""
    query = (select(FaqUnanswered, Group).join(Group, Group.id == FaqUnanswered.group_id)  # type: ignore[arg-type]
             .order_by(FaqUnanswered.count.desc(), FaqUnanswered.last_seen.desc(), FaqUnanswered.id)  # type: ignore[attr-defined]
             .limit(limit))
    if group_ids is not None:
        query = query.where(FaqUnanswered.group_id.in_(sorted(group_ids)))  # type: ignore[attr-defined]
    if group_id is not None:
        query = query.where(FaqUnanswered.group_id == group_id)
    return [(cluster, group) for cluster, group in (await session.execute(query)).all()]


async def get_unanswered(session: AsyncSession, cluster_id: int) -> FaqUnanswered | None:
    return await session.get(FaqUnanswered, cluster_id, populate_existing=True)


async def remove_unanswered(session: AsyncSession, cluster_id: int) -> bool:
    """Forget a cluster (it was made an FAQ, or dismissed); asked again unanswered, it starts a new count."""
    result = await session.execute(delete(FaqUnanswered).where(FaqUnanswered.id == cluster_id))
    return bool(result.rowcount)



async def current_revisions(db: Database, scopes: Sequence[int]) -> dict[int, int]:
    """Like `revisions`, for the per-message check: one driver-level read, no ORM layers, no write lock."""
    from storage import fastsql

    rows = await fastsql.fetch(db, "SELECT scope, revision FROM faq_revisions WHERE scope IN "  # noqa: S608 - placeholders only
                               f"({fastsql.placeholders(len(scopes))})", list(scopes))
    found = {int(scope): int(revision) for scope, revision in rows}
    return {scope: found.get(scope, 0) for scope in scopes}
