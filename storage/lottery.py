"""Lotteries: tables and the queries that run them (create, join, claim, draw, redraw, cancel, proof).

The rules that matter for fairness are kept by the database, not by code paths:
- one entry per member and lottery (unique key);
- entries only while the lottery is open: a join increments `entrant_count` with a conditional UPDATE on
  the lottery row, and a drawer claims the row with a conditional UPDATE too, so the two serialise and
  no entry slips in after the list was frozen;
- prize stock: a winner row carries its prize's stock through a composite foreign key to
  (prize id, stock) and a CHECK keeps its slot below that stock; one active winner per (prize, slot) and
  one win per entrant (unique indexes). No code path and no concurrency can over-issue a prize;
- a draw is claimed once across processes with a lease (status 'drawing', lease_holder, lease_until):
  a drawer that crashed is replaced once its lease has run out.

The draw itself is bot.lottery_draw (pure, documented); this module feeds it rows and records its output.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    ForeignKeyConstraint,
    Index,
    UniqueConstraint,
    and_,
    case,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot import lottery_draw
from storage import points as points_store
from storage.db import Database, UTCDateTime, utcnow
from storage.groups import Group, Member, Membership
from storage.upsert import insert_for

OPEN = "open"
DRAWING = "drawing"
DRAWN = "drawn"
CANCELLED = "cancelled"
# A scheduled announcement that failed this often is given up (the result stays available on request).
MAX_ANNOUNCE_ATTEMPTS = 5


class Lottery(SQLModel, table=True):
    __tablename__ = "lotteries"
    __table_args__ = (
        Index("ix_lotteries_group_status", "group_id", "status"),
        Index("ix_lotteries_status_deadline", "status", "deadline"),
        # A join keyword names one open lottery of a group.
        Index("uq_lotteries_open_keyword", "group_id", "keyword", unique=True,
              sqlite_where=text("status = 'open'"), postgresql_where=text("status = 'open'")),
        CheckConstraint("entrant_count >= 0 AND min_days >= 0 AND picks >= 0", name="counts"),
        UniqueConstraint("event_id", name="uq_lotteries_event_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id")
    title: str = Field(max_length=64)
    keyword: str = Field(max_length=32)
    deadline: datetime = Field(sa_type=UTCDateTime)
    min_days: int = 0
    exclude_admins: bool = False
    status: str = Field(default=OPEN, max_length=16)
    # Secret until the draw: 32 bytes as hex. The commitment (SHA-256 of the bytes) is public from the start.
    seed: str = Field(max_length=64)
    commitment: str = Field(max_length=64)
    entrant_count: int = 0
    # Picks made so far (initial draw plus redraws): the next redraw takes pick number `picks`.
    picks: int = 0
    created_by: str = Field(default="", max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The chat command (inbox event) that created it: a retried event finds it instead of creating another.
    event_id: int | None = None
    # Who is drawing or announcing it, and until when (a crashed holder's lease runs out).
    lease_holder: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    drawn_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    entrants_hash: str | None = Field(default=None, max_length=64)
    announced_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    announce_attempts: int = 0
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class LotteryPrize(SQLModel, table=True):
    __tablename__ = "lottery_prizes"
    __table_args__ = (
        UniqueConstraint("lottery_id", "position", name="uq_lottery_prizes_lottery_position"),
        UniqueConstraint("lottery_id", "name", name="uq_lottery_prizes_lottery_name"),
        # Target of the winners' composite foreign key: a winner row knows its prize's real stock.
        UniqueConstraint("id", "stock", name="uq_lottery_prizes_id_stock"),
        CheckConstraint("stock >= 1", name="stock_positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    lottery_id: int = Field(foreign_key="lotteries.id")
    position: int
    name: str = Field(max_length=32)
    stock: int
    # Points credited to the winner's ledger at the draw ("50积分"); None for other prizes.
    points: int | None = None


class LotteryEntry(SQLModel, table=True):
    __tablename__ = "lottery_entries"
    __table_args__ = (UniqueConstraint("lottery_id", "member_id", name="uq_lottery_entries_lottery_member"),)

    id: int | None = Field(default=None, primary_key=True)
    lottery_id: int = Field(foreign_key="lotteries.id")
    member_id: int = Field(foreign_key="members.id")
    # The platform user id: the identifier that goes into the published entrant list.
    user: str = Field(max_length=128)
    # The inbox event that made the entry: its retry is answered as a fresh join, not "already in".
    event_id: int | None = None
    joined_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LotteryRound(SQLModel, table=True):
    """One draw round: the initial draw (number 0) or a redraw, with who did it and which picks it took."""

    __tablename__ = "lottery_rounds"
    __table_args__ = (UniqueConstraint("lottery_id", "number", name="uq_lottery_rounds_lottery_number"),
                      UniqueConstraint("event_id", name="uq_lottery_rounds_event_id"))

    id: int | None = Field(default=None, primary_key=True)
    lottery_id: int = Field(foreign_key="lotteries.id")
    number: int
    # "draw" or "redraw".
    kind: str = Field(max_length=16)
    first_pick: int
    picks: int
    actor: str = Field(default="", max_length=128)
    reason: str = Field(default="", max_length=255)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The chat command (inbox event) that made a redraw: a retried event finds its round.
    event_id: int | None = None


class LotteryWinner(SQLModel, table=True):
    __tablename__ = "lottery_winners"
    __table_args__ = (
        ForeignKeyConstraint(["prize_id", "prize_stock"], ["lottery_prizes.id", "lottery_prizes.stock"],
                             name="fk_lottery_winners_prize_stock"),
        CheckConstraint("slot >= 0 AND slot < prize_stock", name="slot_within_stock"),
        UniqueConstraint("lottery_id", "pick", name="uq_lottery_winners_lottery_pick"),
        UniqueConstraint("lottery_id", "entry_id", name="uq_lottery_winners_lottery_entry"),
        Index("uq_lottery_winners_active_slot", "prize_id", "slot", unique=True,
              sqlite_where=text("forfeited_at IS NULL"), postgresql_where=text("forfeited_at IS NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    lottery_id: int = Field(foreign_key="lotteries.id")
    round_id: int = Field(foreign_key="lottery_rounds.id")
    prize_id: int
    prize_stock: int
    slot: int
    # Position in the draw's pick sequence (bot.lottery_draw.picks).
    pick: int
    entry_id: int = Field(foreign_key="lottery_entries.id")
    member_id: int = Field(foreign_key="members.id")
    user: str = Field(max_length=128)
    # A redraw's winner replaces a forfeited one (who did not claim the prize).
    replaces_id: int | None = Field(default=None, foreign_key="lottery_winners.id")
    forfeited_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    forfeited_by: str | None = Field(default=None, max_length=128)
    forfeit_reason: str | None = Field(default=None, max_length=255)


class LotteryError(Exception):
    """An operation the lottery's state does not allow; `code` picks the user-facing text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PrizeSpec:
    name: str
    stock: int
    points: int | None = None


class JoinOutcome(StrEnum):
    JOINED = "joined"
    ALREADY = "already"
    CLOSED = "closed"
    FULL = "full"


@dataclass(frozen=True)
class WinnerView:
    """A winner as announced: prize, slot, pick, the member's id and name, and the forfeit if any."""

    prize: str
    position: int
    slot: int
    pick: int
    user: str
    name: str
    forfeited: bool
    forfeit_reason: str | None
    replaces_pick: int | None


# -- creating and listing ----------------------------------------------------------------------------


async def create_lottery(session: AsyncSession, *, group_id: int, title: str, keyword: str, deadline: datetime,
                         prizes: list[PrizeSpec], min_days: int = 0, exclude_admins: bool = False,
                         created_by: str = "", now: datetime | None = None,
                         event_id: int | None = None) -> tuple[Lottery, list[LotteryPrize]]:
    """A new open lottery with a fresh secret seed; LotteryError('keyword_in_use') if the keyword is taken.

    Two creations racing for one keyword: the partial unique index refuses the second (IntegrityError).
    """
    taken = await session.execute(select(Lottery.id).where(
        Lottery.group_id == group_id, Lottery.keyword == keyword, Lottery.status == OPEN))
    if taken.first() is not None:
        raise LotteryError("keyword_in_use", f"an open lottery in this group already uses the keyword {keyword!r}")
    seed = lottery_draw.new_seed()
    lottery = Lottery(group_id=group_id, title=title, keyword=keyword, deadline=deadline, min_days=min_days,
                      exclude_admins=exclude_admins, seed=seed.hex(), commitment=lottery_draw.commitment_of(seed),
                      created_by=created_by, created_at=now or utcnow(), event_id=event_id)
    session.add(lottery)
    await session.flush()
    rows = [LotteryPrize(lottery_id=lottery.id, position=n, name=p.name, stock=p.stock, points=p.points)  # type: ignore[arg-type]
            for n, p in enumerate(prizes)]
    session.add_all(rows)
    await session.flush()
    return lottery, rows


async def created_by_event(session: AsyncSession, event_id: int) -> Lottery | None:
    """The lottery an inbox event created, if it was processed before (a retry)."""
    return (await session.execute(select(Lottery).where(Lottery.event_id == event_id))).scalar_one_or_none()


async def get_lottery(session: AsyncSession, lottery_id: int, group_id: int | None = None) -> Lottery | None:
    """The lottery, fresh from the database; with group_id only if it belongs to that group."""
    query = select(Lottery).where(Lottery.id == lottery_id).execution_options(populate_existing=True)
    if group_id is not None:
        query = query.where(Lottery.group_id == group_id)
    return (await session.execute(query)).scalar_one_or_none()


async def prizes_of(session: AsyncSession, lottery_id: int) -> list[LotteryPrize]:
    rows = await session.execute(select(LotteryPrize).where(LotteryPrize.lottery_id == lottery_id)
                                 .order_by(LotteryPrize.position))  # type: ignore[arg-type]
    return list(rows.scalars())


async def open_in_group(session: AsyncSession, group_id: int) -> list[Lottery]:
    """The group's open lotteries, soonest deadline first."""
    rows = await session.execute(select(Lottery).where(Lottery.group_id == group_id, Lottery.status == OPEN)
                                 .order_by(Lottery.deadline, Lottery.id))  # type: ignore[arg-type]
    return list(rows.scalars())


async def list_lotteries(session: AsyncSession, *, channel: str | None = None, group: str | None = None,
                         limit: int = 50, group_ids: Collection[int] | None = None, status: str | None = None,
                         before_id: int | None = None) -> list[tuple[Lottery, Group]]:
    """Lotteries newest first, with their group (the CLI, the console). `group_ids`: only those groups';
    `before_id`: older than that one (paging)."""
    query = (select(Lottery, Group).join(Group, Group.id == Lottery.group_id)  # type: ignore[arg-type]
             .order_by(Lottery.id.desc()).limit(limit))  # type: ignore[union-attr]
    if group_ids is not None:
        query = query.where(Lottery.group_id.in_(sorted(group_ids)))  # type: ignore[attr-defined]
    if status is not None:
        query = query.where(Lottery.status == status)
    if before_id is not None:
        query = query.where(Lottery.id < before_id)  # type: ignore[operator]
    if channel is not None:
        query = query.where(Group.channel == channel)
    if group is not None:
        query = query.where(Group.external_id == group)
    return [(lot, grp) for lot, grp in (await session.execute(query)).all()]


# -- joining -----------------------------------------------------------------------------------------


async def member_since(session: AsyncSession, group_id: int, member_id: int) -> datetime | None:
    """When the member's current stay in the group began (first seen, for members never seen joining)."""
    row = await session.execute(select(func.min(Membership.joined_at)).where(
        Membership.group_id == group_id, Membership.member_id == member_id,
        Membership.left_at.is_(None)))  # type: ignore[union-attr]
    value = row.scalar_one_or_none()
    if value is not None and value.tzinfo is None:  # an aggregate may come back without the column's type
        value = value.replace(tzinfo=UTC)
    return value


async def join(session: AsyncSession, lottery: Lottery, *, member_id: int, user: str, at: datetime,
               event_id: int | None, max_entrants: int) -> tuple[JoinOutcome, int]:
    """Enter a member (eligibility already checked); the outcome and the entrant count afterwards."""
    existing = (await session.execute(select(LotteryEntry.event_id).where(
        LotteryEntry.lottery_id == lottery.id, LotteryEntry.member_id == member_id))).first()
    if existing is not None:
        count = await _entrant_count(session, lottery.id)  # type: ignore[arg-type]
        # The same event processed again (a retry after a crash) was the join itself.
        same_event = event_id is not None and existing[0] == event_id
        return (JoinOutcome.JOINED if same_event else JoinOutcome.ALREADY), count
    # Taking a seat locks the lottery row: a drawer's claim waits for this transaction, or this waits for it.
    seat = await session.execute(
        update(Lottery)
        .where(Lottery.id == lottery.id, Lottery.status == OPEN, Lottery.deadline > at,
               Lottery.entrant_count < max_entrants)
        .values(entrant_count=Lottery.entrant_count + 1))
    if not seat.rowcount:
        fresh = await get_lottery(session, lottery.id)  # type: ignore[arg-type]
        closed = fresh is None or fresh.status != OPEN or fresh.deadline <= at
        return (JoinOutcome.CLOSED if closed else JoinOutcome.FULL), fresh.entrant_count if fresh else 0
    added = await session.execute(
        insert_for(session, LotteryEntry)
        .values(lottery_id=lottery.id, member_id=member_id, user=user, event_id=event_id, joined_at=at)
        .on_conflict_do_nothing(index_elements=["lottery_id", "member_id"]))
    if not added.rowcount:  # the same member joining twice at the same moment
        await session.execute(update(Lottery).where(Lottery.id == lottery.id)
                              .values(entrant_count=Lottery.entrant_count - 1))
        return JoinOutcome.ALREADY, await _entrant_count(session, lottery.id)  # type: ignore[arg-type]
    return JoinOutcome.JOINED, await _entrant_count(session, lottery.id)  # type: ignore[arg-type]


async def _entrant_count(session: AsyncSession, lottery_id: int) -> int:
    return int((await session.execute(select(Lottery.entrant_count).where(Lottery.id == lottery_id))).scalar_one())


async def entrants(session: AsyncSession, lottery_id: int) -> list[str]:
    """The stored entrant ids (unsorted; bot.lottery_draw.canonical_entrants gives the published order)."""
    rows = await session.execute(select(LotteryEntry.user).where(LotteryEntry.lottery_id == lottery_id))
    return list(rows.scalars())


@dataclass(frozen=True)
class EntrantView:
    """An entrant as the console lists them: platform user id, name, when they joined."""

    user: str
    name: str
    joined_at: datetime


async def entrant_rows(session: AsyncSession, lottery_id: int, *, offset: int = 0,
                       limit: int = 100) -> tuple[list[EntrantView], int]:
    """Entrants in the order they joined, with their names, and how many there are."""
    total = (await session.execute(select(func.count()).select_from(LotteryEntry)
                                   .where(LotteryEntry.lottery_id == lottery_id))).scalar_one()
    rows = await session.execute(
        select(LotteryEntry.user, Member.name, LotteryEntry.joined_at)
        .join(Member, Member.id == LotteryEntry.member_id)  # type: ignore[arg-type]
        .where(LotteryEntry.lottery_id == lottery_id)
        .order_by(LotteryEntry.joined_at, LotteryEntry.id).offset(offset).limit(limit))  # type: ignore[arg-type]
    return [EntrantView(user, name or user, joined_at) for user, name, joined_at in rows.all()], int(total)


async def cancel(session: AsyncSession, lottery_id: int, group_id: int | None, now: datetime) -> bool:
    """Cancel an open lottery (not one being drawn or drawn); False if it was not open."""
    query = update(Lottery).where(Lottery.id == lottery_id, Lottery.status == OPEN)
    if group_id is not None:
        query = query.where(Lottery.group_id == group_id)
    return bool((await session.execute(query.values(status=CANCELLED, cancelled_at=now))).rowcount)


# -- drawing -----------------------------------------------------------------------------------------


def _due(now: datetime) -> object:
    """Lotteries the scheduled job should take: past their deadline, abandoned by a drawer, or unannounced."""
    lease_free = or_(Lottery.lease_until.is_(None), Lottery.lease_until < now)  # type: ignore[union-attr,operator]
    return or_(
        and_(Lottery.status == OPEN, Lottery.deadline <= now),
        and_(Lottery.status == DRAWING, Lottery.lease_until < now),  # type: ignore[operator]
        and_(Lottery.status == DRAWN, Lottery.announced_at.is_(None),  # type: ignore[union-attr]
             Lottery.announce_attempts < MAX_ANNOUNCE_ATTEMPTS, lease_free),
    )


async def due_lotteries(db: Database, now: datetime, limit: int = 100) -> list[int]:
    async with db.session() as session:
        rows = await session.execute(select(Lottery.id).where(_due(now)).order_by(Lottery.deadline).limit(limit))  # type: ignore[arg-type]
        return list(rows.scalars())


async def claim(db: Database, lottery_id: int, *, holder: str, lease_seconds: float, now: datetime,
                early: bool = False, group_id: int | None = None) -> Lottery | None:
    """Take the lottery for drawing (or announcing) with a lease; None if someone else has it or it is not due.

    The conditional UPDATE is the claim: of two processes only one sees a changed row. `early` is an admin's
    draw before the deadline (an open lottery, or one this holder, or a dead holder, left half done).
    """
    if early:
        condition = or_(Lottery.status == OPEN,
                        and_(Lottery.status == DRAWING,
                             or_(Lottery.lease_until < now, Lottery.lease_holder == holder)))  # type: ignore[operator]
    else:
        condition = _due(now)
    query = update(Lottery).where(Lottery.id == lottery_id, condition)  # type: ignore[arg-type]
    if group_id is not None:
        query = query.where(Lottery.group_id == group_id)
    async with db.session() as session:
        result = await session.execute(query.values(
            status=case((Lottery.status == OPEN, DRAWING), else_=Lottery.status),
            lease_holder=holder, lease_until=now + timedelta(seconds=lease_seconds)))
        if not result.rowcount:
            return None
        return await get_lottery(session, lottery_id)


async def record_draw(db: Database, lottery_id: int, *, holder: str, actor: str, now: datetime,
                      announced: bool = False, keep_lease: bool = False) -> bool:
    """Freeze the entrant list, draw, and record round, winners and proof in one transaction.

    Only the lease holder of a lottery in 'drawing' may do it; False if it was already drawn (by a holder
    whose lease ran out but who finished anyway). Points prizes are credited in the same transaction.
    """
    async with db.session() as session:
        lottery = await get_lottery(session, lottery_id)
        if lottery is None or lottery.status != DRAWING or lottery.lease_holder != holder:
            return False
        rows = (await session.execute(select(LotteryEntry.user, LotteryEntry.id, LotteryEntry.member_id)
                                      .where(LotteryEntry.lottery_id == lottery_id))).all()
        prizes = await prizes_of(session, lottery_id)
        by_user = {user: (entry_id, member_id) for user, entry_id, member_id in rows}
        result = lottery_draw.draw(bytes.fromhex(lottery.seed), by_user, [(p.name, p.stock) for p in prizes])
        finished = await session.execute(
            update(Lottery).where(Lottery.id == lottery_id, Lottery.status == DRAWING, Lottery.lease_holder == holder)
            .values(status=DRAWN, drawn_at=now, entrants_hash=result.entrants_hash, picks=len(result.wins),
                    entrant_count=result.entrant_count, announced_at=now if announced else None,
                    lease_holder=holder if keep_lease else None, lease_until=lottery.lease_until if keep_lease else None))
        if not finished.rowcount:
            return False
        round_row = LotteryRound(lottery_id=lottery_id, number=0, kind="draw", first_pick=0,
                                 picks=len(result.wins), actor=actor, at=now)
        session.add(round_row)
        await session.flush()
        prize_by_name = {p.name: p for p in prizes}
        winners = []
        for win in result.wins:
            prize = prize_by_name[win.prize]
            entry_id, member_id = by_user[win.user]
            winners.append({"lottery_id": lottery_id, "round_id": round_row.id, "prize_id": prize.id,
                            "prize_stock": prize.stock, "slot": win.slot, "pick": win.pick, "entry_id": entry_id,
                            "member_id": member_id, "user": win.user})
            if prize.points:
                await points_store.add_entry(session, group_id=lottery.group_id, member_id=member_id,
                                             delta=prize.points, kind=points_store.LOTTERY,
                                             reason=f"{lottery.title} {prize.name}",
                                             ref=f"lottery:{lottery_id}:{prize.id}:{win.slot}", at=now)
        if winners:
            await session.execute(insert(LotteryWinner), winners)
    return True


async def mark_announced(db: Database, lottery_id: int, holder: str, now: datetime) -> None:
    async with db.session() as session:
        await session.execute(update(Lottery).where(Lottery.id == lottery_id, Lottery.lease_holder == holder)
                              .values(announced_at=now, lease_holder=None, lease_until=None))


async def announce_failed(db: Database, lottery_id: int, holder: str) -> None:
    """Count a failed announcement; the lease runs out and the job tries again (a few times)."""
    async with db.session() as session:
        await session.execute(update(Lottery).where(Lottery.id == lottery_id, Lottery.lease_holder == holder)
                              .values(announce_attempts=Lottery.announce_attempts + 1))


async def redraw(session: AsyncSession, lottery: Lottery, *, prize_name: str, member_id: int, actor: str,
                 reason: str, now: datetime, event_id: int | None = None) -> LotteryWinner:
    """Forfeit an unclaimed prize's winner and give the slot to the next pick of the same shuffle.

    The lottery row is updated first (picks + 1), which serialises concurrent redraws of one lottery.
    """
    bumped = await session.execute(update(Lottery).where(Lottery.id == lottery.id, Lottery.status == DRAWN)
                                   .values(picks=Lottery.picks + 1))
    if not bumped.rowcount:
        raise LotteryError("not_drawn", "the lottery has not been drawn")
    prize = (await session.execute(select(LotteryPrize).where(
        LotteryPrize.lottery_id == lottery.id, LotteryPrize.name == prize_name))).scalar_one_or_none()
    if prize is None:
        raise LotteryError("no_such_prize", f"the lottery has no prize {prize_name!r}")
    if prize.points:
        raise LotteryError("points_prize", "points prizes are credited at the draw and cannot be redrawn")
    old = (await session.execute(select(LotteryWinner).where(
        LotteryWinner.lottery_id == lottery.id, LotteryWinner.prize_id == prize.id,
        LotteryWinner.member_id == member_id, LotteryWinner.forfeited_at.is_(None)))).scalar_one_or_none()  # type: ignore[union-attr]
    if old is None:
        raise LotteryError("not_a_winner", f"that member holds no {prize_name!r} in this lottery")
    fresh = await get_lottery(session, lottery.id)  # type: ignore[arg-type]
    assert fresh is not None
    pick = fresh.picks - 1
    rows = (await session.execute(select(LotteryEntry.user, LotteryEntry.id, LotteryEntry.member_id)
                                  .where(LotteryEntry.lottery_id == lottery.id))).all()
    if pick >= len(rows):
        raise LotteryError("no_entrants_left", "every entrant has already been picked")
    by_user = {user: (entry_id, member) for user, entry_id, member in rows}
    chosen = lottery_draw.picks(bytes.fromhex(fresh.seed), lottery_draw.canonical_entrants(by_user), pick + 1)[pick]
    forfeited = await session.execute(
        update(LotteryWinner).where(LotteryWinner.id == old.id, LotteryWinner.forfeited_at.is_(None))  # type: ignore[union-attr]
        .values(forfeited_at=now, forfeited_by=actor, forfeit_reason=reason[:255]))
    if not forfeited.rowcount:
        raise LotteryError("not_a_winner", "that winner was already replaced")
    number = (await session.execute(select(func.count()).select_from(LotteryRound)
                                    .where(LotteryRound.lottery_id == lottery.id))).scalar_one()
    round_row = LotteryRound(lottery_id=lottery.id, number=number, kind="redraw", first_pick=pick, picks=1,  # type: ignore[arg-type]
                             actor=actor, reason=reason[:255], at=now, event_id=event_id)
    session.add(round_row)
    await session.flush()
    entry_id, winner_member = by_user[chosen]
    winner = LotteryWinner(lottery_id=lottery.id, round_id=round_row.id, prize_id=prize.id, prize_stock=prize.stock,  # type: ignore[arg-type]
                           slot=old.slot, pick=pick, entry_id=entry_id, member_id=winner_member, user=chosen,
                           replaces_id=old.id)
    session.add(winner)
    await session.flush()
    return winner


async def redraw_winner(session: AsyncSession, lottery: Lottery, *, prize_name: str, who: str, actor: str,
                        reason: str, now: datetime, event_id: int | None = None) -> LotteryWinner:
    """A redraw with the winner named as people write it ("@小红", "小红" or the user id): what 抽奖 重抽,
    `qunbot lottery redraw` and the console's redraw all call. LotteryError("not_a_winner") for a name
    that did not enter; otherwise as `redraw`."""
    member = await find_entrant(session, lottery.id, who)  # type: ignore[arg-type]
    if member is None:
        raise LotteryError("not_a_winner", f"{who!r} did not enter lottery {lottery.id}")
    return await redraw(session, lottery, prize_name=prize_name, member_id=member.id, actor=actor,  # type: ignore[arg-type]
                        reason=reason, now=now, event_id=event_id)


# -- results and proof -------------------------------------------------------------------------------


async def winners(session: AsyncSession, lottery_id: int) -> list[WinnerView]:
    """Every winner, forfeited ones included, in prize order then slot then pick."""
    rows = await session.execute(
        select(LotteryWinner, LotteryPrize.name, LotteryPrize.position, Member.name)
        .join(LotteryPrize, LotteryPrize.id == LotteryWinner.prize_id)  # type: ignore[arg-type]
        .join(Member, Member.id == LotteryWinner.member_id)  # type: ignore[arg-type]
        .where(LotteryWinner.lottery_id == lottery_id)
        .order_by(LotteryPrize.position, LotteryWinner.slot, LotteryWinner.pick))
    found = [(w, prize, position, name) for w, prize, position, name in rows.all()]
    pick_of = {w.id: w.pick for w, *_ in found}
    return [WinnerView(prize, position, w.slot, w.pick, w.user, name or w.user, w.forfeited_at is not None,
                       w.forfeit_reason, pick_of.get(w.replaces_id) if w.replaces_id else None)
            for w, prize, position, name in found]


async def redraw_by_event(session: AsyncSession, event_id: int) -> tuple[LotteryWinner, LotteryWinner] | None:
    """(forfeited winner, new winner) of the redraw an inbox event made, if it was processed before."""
    found = (await session.execute(select(LotteryWinner).join(LotteryRound, LotteryRound.id == LotteryWinner.round_id)  # type: ignore[arg-type]
                                   .where(LotteryRound.event_id == event_id))).scalar_one_or_none()
    if found is None or found.replaces_id is None:
        return None
    old = await session.get(LotteryWinner, found.replaces_id)
    assert old is not None
    return old, found


async def rounds(session: AsyncSession, lottery_id: int) -> list[LotteryRound]:
    rows = await session.execute(select(LotteryRound).where(LotteryRound.lottery_id == lottery_id)
                                 .order_by(LotteryRound.number))  # type: ignore[arg-type]
    return list(rows.scalars())


async def verify_stored(session: AsyncSession, lottery: Lottery) -> list[str]:
    """Recompute a drawn lottery from its published seed and the stored entrant list; [] if it matches."""
    if lottery.status != DRAWN or lottery.entrants_hash is None:
        return [f"lottery {lottery.id} is {lottery.status}, not drawn: nothing to verify yet"]
    prizes = await prizes_of(session, lottery.id)  # type: ignore[arg-type]
    wins = [lottery_draw.Win(w.pick, w.prize, w.slot, w.user, w.replaces_pick, w.forfeited)
            for w in await winners(session, lottery.id)]  # type: ignore[arg-type]
    problems = lottery_draw.verify(seed_hex=lottery.seed, commitment=lottery.commitment,
                                   entrants=await entrants(session, lottery.id),  # type: ignore[arg-type]
                                   published_entrants_hash=lottery.entrants_hash,
                                   prizes=[(p.name, p.stock) for p in prizes], wins=wins)
    if lottery.picks != len(wins):
        problems.append(f"the lottery records {lottery.picks} picks but {len(wins)} winner rows")
    return problems


async def find_entrant(session: AsyncSession, lottery_id: int, who: str) -> Member | None:
    """An entrant named as people write it: "@小红", "小红", or the user id."""
    who = who.strip().lstrip("@").strip()
    if not who:
        return None
    base = (select(Member).join(LotteryEntry, LotteryEntry.member_id == Member.id)  # type: ignore[arg-type]
            .where(LotteryEntry.lottery_id == lottery_id))
    for condition in (Member.external_id == who, Member.name == who):
        found = (await session.execute(base.where(condition).order_by(Member.id).limit(1))).scalar_one_or_none()
        if found is not None:
            return found
    return None


async def open_keywords(db: Database, group_id: int) -> list[tuple[int, str]]:
    """(id, keyword) of the group's open lotteries, soonest deadline first.

    Every short chat message asks this, so it is one driver-level read: no ORM layers, no write lock.
    """
    from storage import fastsql

    rows = await fastsql.fetch(
        db, "SELECT id, keyword FROM lotteries WHERE group_id = ? AND status = ? ORDER BY deadline, id",
        [group_id, OPEN])
    return [(int(i), str(k)) for i, k in rows]
