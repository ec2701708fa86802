"""Scheduled posts through the WeCom app: customer-group mass-message tasks and the quotas behind them.

A scheduled post reaches a customer group (客户群) only as an `add_msg_template` task that the group's owner
sends from the WeCom client; until they do, nothing is posted. What the database keeps, so that several
processes behave as one:
- a target per delivery (`wecom_group_msg_targets`, keyed by the delivery): the rendered text and the owner
  who must send it, queued by the outbox in one transaction with the group's slot of the per-period cap
  (a retried queueing finds its target and takes nothing twice);
- a task per (run, owner, text), at most 2000 groups each (`wecom_group_msg_tasks`): recorded as 'creating'
  and given its targets by a conditional UPDATE (`task_id IS NULL`) *before* add_msg_template is called,
  so two processes can never create a task for the same groups; the msgid is recorded once WeCom answers,
  and a task whose creator died before that is recorded failed (outcome unknown), never created again;
- counters per (key, period) (`wecom_quotas`): a customer group's mass messages per period, taken with a
  conditional upsert (two workers cannot both take the last one) and given back when a task fails or
  expires; and the app's appchat/send sends per minute and per day.

Deliveries stay `awaiting` (storage.push.AWAITING) from queueing until their task's outcome is known:
`sent` once the owner sent it (with WeCom's send time), `failed` with the reason otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import CheckConstraint, Index, Text, UniqueConstraint, and_, delete, or_, select, update
from sqlmodel import Field, SQLModel

from storage.db import Database, UTCDateTime
from storage.push import AWAITING, FAILED, PENDING, SENDING, SENT, PushDailyCount, PushDelivery
from storage.upsert import insert_for

# Task states.
CREATING, OPEN, DONE, TASK_FAILED, EXPIRED = "creating", "open", "done", "failed", "expired"
# What get_groupmsg_send_result says of each group (customer-group tasks).
NOT_SENT, SENT_OK, NOT_CONTACT, OVER_LIMIT = 0, 1, 2, 3
APPCHAT_MINUTE, APPCHAT_DAY = "appchat:minute", "appchat:day"


class WeComGroupMsgTask(SQLModel, table=True):
    """An add_msg_template task: one owner, one text, up to 2000 of their customer groups."""

    __tablename__ = "wecom_group_msg_tasks"
    __table_args__ = (
        UniqueConstraint("msgid", name="uq_wecom_group_msg_tasks_msgid"),
        Index("ix_wecom_group_msg_tasks_due", "status", "next_check_at"),
        Index("ix_wecom_group_msg_tasks_run_id", "run_id"),
        CheckConstraint("status IN ('creating', 'open', 'done', 'failed', 'expired')", name="status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="push_runs.id")
    # The staff member (the groups' owner) who must send it from the WeCom client.
    sender: str = Field(max_length=128)
    text: str = Field(default="", sa_type=Text)
    # creating (add_msg_template under way), open (waiting for the sender), done, failed, expired.
    status: str = Field(default=CREATING, max_length=16)
    msgid: str | None = Field(default=None, max_length=128)
    # The process creating it, until WeCom answered; past lease_until it is recorded as outcome unknown.
    holder: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    # Not sent by then: cancelled at WeCom and its groups recorded failed.
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_check_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    checked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reason: str = Field(default="", sa_type=Text)


class WeComGroupMsgTarget(SQLModel, table=True):
    """A delivery to a customer group, queued for its owner's task."""

    __tablename__ = "wecom_group_msg_targets"
    __table_args__ = (
        Index("ix_wecom_group_msg_targets_task_id", "task_id"),
        Index("ix_wecom_group_msg_targets_run_id", "run_id"),
    )

    delivery_id: int = Field(foreign_key="push_deliveries.id", primary_key=True)
    run_id: int = Field(foreign_key="push_runs.id")
    group_id: int = Field(foreign_key="groups.id")
    chat_id: str = Field(max_length=128)
    sender: str = Field(max_length=128)
    text: str = Field(default="", sa_type=Text)
    task_id: int | None = Field(default=None, foreign_key="wecom_group_msg_tasks.id")
    # The cap period the group's slot was taken in ("2030-05"); None with no cap or once given back.
    quota_period: str | None = Field(default=None, max_length=32)
    # add_msg_template calls refused before WeCom did anything (busy, rate limited): tried again up to a bound.
    create_tries: int = 0
    staged_at: datetime = Field(sa_type=UTCDateTime)


class WeComQuota(SQLModel, table=True):
    """How much of a limit is used in a period: a customer group's mass messages ("group:12", "2030-05"), or the
    app's appchat/send sends ("appchat:minute", "2030-05-01T01:02")."""

    __tablename__ = "wecom_quotas"

    key: str = Field(max_length=64, primary_key=True)
    period: str = Field(max_length=32, primary_key=True)
    used: int = 0


class _Undo(Exception):
    """Raised inside a transaction to roll it back."""


# -- the per-period cap ----------------------------------------------------------------------------------


def cap_period(day: date, period: str) -> str:
    """The cap period a local day falls in: "2030-05" (month), "2030-W18" (ISO week) or "2030-05-01" (day)."""
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


def group_key(group_id: int) -> str:
    return f"group:{group_id}"


async def _take(session: Any, key: str, period: str, cap: int) -> bool:
    """One more of `key` in `period` unless `cap` is reached (a conditional upsert)."""
    stmt = (insert_for(session, WeComQuota).values(key=key, period=period, used=1)
            .on_conflict_do_update(index_elements=["key", "period"], set_={"used": WeComQuota.used + 1},
                                   where=WeComQuota.used < cap)
            .returning(WeComQuota.used))
    return (await session.execute(stmt)).first() is not None


async def _give_back(session: Any, key: str, period: str) -> None:
    await session.execute(update(WeComQuota).where(WeComQuota.key == key, WeComQuota.period == period,
                                                   WeComQuota.used > 0).values(used=WeComQuota.used - 1))


async def quota_used(db: Database, key: str, period: str) -> int:
    async with db.read_session() as session:
        row = await session.get(WeComQuota, (key, period))
        return row.used if row else 0


# -- queueing --------------------------------------------------------------------------------------------


async def stage(db: Database, *, delivery_id: int, run_id: int, group_id: int, chat_id: str, sender: str,
                text: str, now: datetime, cap: int, period: str) -> bool:
    """Queue a delivery for its owner's task, taking the group's slot of `period` (when `cap` > 0) in the same
    transaction. True if queued (now or before: a retried queueing takes nothing twice); False if the cap is
    reached (nothing queued)."""
    try:
        async with db.session() as session:
            inserted = await session.execute(
                insert_for(session, WeComGroupMsgTarget)
                .values(delivery_id=delivery_id, run_id=run_id, group_id=group_id, chat_id=chat_id, sender=sender,
                        text=text, quota_period=period if cap > 0 else None, create_tries=0, staged_at=now)
                .on_conflict_do_nothing(index_elements=["delivery_id"]).returning(WeComGroupMsgTarget.delivery_id))
            if inserted.first() is None:
                return True
            if cap > 0 and not await _take(session, group_key(group_id), period, cap):
                raise _Undo
    except _Undo:
        return False
    return True


@dataclass(frozen=True)
class Batch:
    """Queued deliveries one task can carry: one run, one owner, one text; [(delivery id, chat id)]."""

    run_id: int
    sender: str
    text: str
    targets: list[tuple[int, str]]


async def ready_batches(db: Database, *, channel: str, now: datetime, settle_seconds: float) -> list[Batch]:
    """Queued deliveries without a task, by (run, owner, text), from runs whose fan-out on `channel` has
    settled: none of the run's deliveries there is being sent or due to be (those waiting for a later time —
    quiet hours, a retry — make a task of their own later), or the oldest queued one waited `settle_seconds`."""
    T = WeComGroupMsgTarget  # noqa: N806
    async with db.read_session() as session:
        rows = (await session.execute(
            select(T.delivery_id, T.run_id, T.chat_id, T.sender, T.text, T.staged_at)
            .join(PushDelivery, PushDelivery.id == T.delivery_id)
            .where(T.task_id.is_(None), PushDelivery.status == AWAITING)  # type: ignore[union-attr]
            .order_by(T.run_id, T.delivery_id))).all()  # type: ignore[arg-type]
        if not rows:
            return []
        run_ids = sorted({r.run_id for r in rows})
        busy = set((await session.execute(
            select(PushDelivery.run_id).where(
                PushDelivery.run_id.in_(run_ids), PushDelivery.channel == channel,  # type: ignore[attr-defined]
                or_(PushDelivery.status == SENDING,
                    and_(PushDelivery.status == PENDING, PushDelivery.next_attempt_at <= now)))  # type: ignore[arg-type]
            .distinct())).scalars())
    oldest: dict[int, datetime] = {}
    for r in rows:
        oldest[r.run_id] = min(oldest.get(r.run_id, r.staged_at), r.staged_at)
    settled = {run for run in run_ids if run not in busy or oldest[run] <= now - timedelta(seconds=settle_seconds)}
    batches: dict[tuple[int, str, str], list[tuple[int, str]]] = {}
    for r in rows:
        if r.run_id in settled:
            batches.setdefault((r.run_id, r.sender, r.text), []).append((r.delivery_id, r.chat_id))
    return [Batch(run, sender, text, targets) for (run, sender, text), targets in batches.items()]


async def open_task(db: Database, *, run_id: int, sender: str, text: str, delivery_ids: list[int], holder: str,
                    now: datetime, lease_seconds: float) -> int | None:
    """Record a task as 'creating' and give it these queued deliveries, before add_msg_template is called.
    None if any of them was taken by another task meanwhile (nothing recorded)."""
    try:
        async with db.session() as session:
            task = WeComGroupMsgTask(run_id=run_id, sender=sender, text=text, status=CREATING, holder=holder,
                                     lease_until=now + timedelta(seconds=lease_seconds), created_at=now)
            session.add(task)
            await session.flush()
            taken = await session.execute(
                update(WeComGroupMsgTarget)
                .where(WeComGroupMsgTarget.delivery_id.in_(delivery_ids),  # type: ignore[attr-defined]
                       WeComGroupMsgTarget.task_id.is_(None))  # type: ignore[union-attr]
                .values(task_id=task.id))
            if taken.rowcount != len(delivery_ids):
                raise _Undo
    except _Undo:
        return None
    return task.id


# -- outcomes --------------------------------------------------------------------------------------------


async def _targets(session: Any, task_id: int) -> list[WeComGroupMsgTarget]:
    rows = await session.execute(select(WeComGroupMsgTarget).where(WeComGroupMsgTarget.task_id == task_id)
                                 .order_by(WeComGroupMsgTarget.delivery_id))  # type: ignore[arg-type]
    return list(rows.scalars())


async def _awaiting(session: Any, delivery_ids: Iterable[int]) -> dict[int, tuple[int, date | None]]:
    """Of these deliveries, those still awaiting: id → (group id, the daily cap's counted day)."""
    ids = list(delivery_ids)
    if not ids:
        return {}
    rows = await session.execute(select(PushDelivery.id, PushDelivery.group_id, PushDelivery.counted_day).where(
        PushDelivery.id.in_(ids), PushDelivery.status == AWAITING))  # type: ignore[union-attr]
    return {i: (g, d) for i, g, d in rows.all()}


async def _fail(session: Any, targets: list[WeComGroupMsgTarget], reasons: dict[int, str], now: datetime) -> int:
    """Record these queued deliveries failed (those still awaiting), each with its reason, and give back what
    they held: the group's slot of the cap period, and their day's slot of push.daily_cap."""
    still = await _awaiting(session, [t.delivery_id for t in targets])
    for target in targets:
        if target.delivery_id not in still:
            continue
        group_id, day = still[target.delivery_id]
        await session.execute(update(PushDelivery).where(PushDelivery.id == target.delivery_id,
                                                         PushDelivery.status == AWAITING).values(
            status=FAILED, reason=reasons[target.delivery_id][:2000], counted_day=None, updated_at=now))
        if day is not None:
            await session.execute(update(PushDailyCount).where(
                PushDailyCount.group_id == group_id, PushDailyCount.day == day, PushDailyCount.sent > 0)
                .values(sent=PushDailyCount.sent - 1))
        if target.quota_period is not None:
            await _give_back(session, group_key(target.group_id), target.quota_period)
            await session.execute(update(WeComGroupMsgTarget).where(
                WeComGroupMsgTarget.delivery_id == target.delivery_id).values(quota_period=None))
    return len(still)


async def _note(session: Any, delivery_ids: list[int], note: str, now: datetime) -> None:
    if delivery_ids:
        await session.execute(update(PushDelivery).where(PushDelivery.id.in_(delivery_ids),  # type: ignore[attr-defined]
                                                         PushDelivery.status == AWAITING)
                              .values(reason=note[:2000], updated_at=now))


async def task_opened(db: Database, task_id: int, *, msgid: str, refused: dict[str, str], note: str, now: datetime,
                      expires_at: datetime, next_check_at: datetime) -> None:
    """WeCom created the task: it waits for its sender. Groups WeCom refused (`fail_list`) are recorded failed."""
    async with db.session() as session:
        await session.execute(update(WeComGroupMsgTask).where(WeComGroupMsgTask.id == task_id).values(
            status=OPEN, msgid=msgid, holder=None, lease_until=None, expires_at=expires_at,
            next_check_at=next_check_at))
        targets = await _targets(session, task_id)
        failing = [t for t in targets if t.chat_id in refused]
        await _fail(session, failing, {t.delivery_id: refused[t.chat_id] for t in failing}, now)
        await _note(session, [t.delivery_id for t in targets if t.chat_id not in refused], note, now)


async def task_failed(db: Database, task_id: int, reason: str, now: datetime, *, status: str = TASK_FAILED) -> int:
    """The task will send nothing (refused, outcome unknown, expired): its deliveries still awaiting are
    recorded failed with the reason. How many."""
    async with db.session() as session:
        await session.execute(update(WeComGroupMsgTask).where(WeComGroupMsgTask.id == task_id).values(
            status=status, reason=reason[:2000], holder=None, lease_until=None, checked_at=now, next_check_at=None))
        targets = await _targets(session, task_id)
        return await _fail(session, targets, {t.delivery_id: reason for t in targets}, now)


async def task_released(db: Database, task_id: int, reason: str, now: datetime, *, max_tries: int) -> int:
    """add_msg_template refused the task before doing anything (busy, rate limited): its deliveries go back to
    the queue for the next pass, those tried `max_tries` times are recorded failed. How many went back."""
    async with db.session() as session:
        await session.execute(update(WeComGroupMsgTask).where(WeComGroupMsgTask.id == task_id).values(
            status=TASK_FAILED, reason=f"not created, its groups queued again: {reason}"[:2000], holder=None,
            lease_until=None, checked_at=now))
        targets = await _targets(session, task_id)
        spent = [t for t in targets if t.create_tries + 1 >= max_tries]
        await _fail(session, spent, {t.delivery_id: f"add_msg_template failed {max_tries} times: {reason}"
                                     for t in spent}, now)
        spent_ids = {t.delivery_id for t in spent}
        again = [t.delivery_id for t in targets if t.delivery_id not in spent_ids]
        if again:
            await session.execute(update(WeComGroupMsgTarget).where(
                WeComGroupMsgTarget.delivery_id.in_(again)).values(  # type: ignore[attr-defined]
                task_id=None, create_tries=WeComGroupMsgTarget.create_tries + 1))
            await _note(session, again, f"add_msg_template failed, trying again: {reason}", now)
        return len(again)


def _when(send_time: Any, now: datetime) -> datetime:
    return datetime.fromtimestamp(int(send_time), UTC) if str(send_time or "").isdigit() and int(send_time) else now


async def task_results(db: Database, task_id: int, results: dict[str, dict[str, Any]], *, sent_note: str,
                       now: datetime) -> tuple[int, int]:
    """The sender sent the task: each group's delivery is recorded from WeCom's per-group result (sent, with
    WeCom's send time, or failed with the reason). (sent, failed)."""
    async with db.session() as session:
        await session.execute(update(WeComGroupMsgTask).where(WeComGroupMsgTask.id == task_id).values(
            status=DONE, checked_at=now, next_check_at=None))
        targets = await _targets(session, task_id)
        still = await _awaiting(session, [t.delivery_id for t in targets])
        reasons: dict[int, str] = {}
        sent = 0
        for target in targets:
            if target.delivery_id not in still:
                continue
            result = results.get(target.chat_id)
            status = result.get("status") if result else None
            if status == SENT_OK:
                await session.execute(update(PushDelivery).where(PushDelivery.id == target.delivery_id,
                                                                 PushDelivery.status == AWAITING).values(
                    status=SENT, sent_at=_when(result.get("send_time") if result else None, now),
                    reason=sent_note[:2000], updated_at=now))
                sent += 1
            elif status == OVER_LIMIT:
                reasons[target.delivery_id] = ("not sent by WeCom: the group already received its share of mass "
                                               "messages for the period (send result status 3)")
            elif status == NOT_CONTACT:
                reasons[target.delivery_id] = "not sent by WeCom (send result status 2: not a contact)"
            elif status == NOT_SENT:
                reasons[target.delivery_id] = "the owner sent the task without this group (send result status 0)"
            else:
                reasons[target.delivery_id] = f"WeCom gave no send result for this group ({status!r})"
        failing = [t for t in targets if t.delivery_id in reasons]
        failed = await _fail(session, failing, reasons, now)
        return sent, failed


async def check_later(db: Database, task_id: int, *, at: datetime, now: datetime) -> None:
    async with db.session() as session:
        await session.execute(update(WeComGroupMsgTask).where(WeComGroupMsgTask.id == task_id).values(
            checked_at=now, next_check_at=at))


async def due_tasks(db: Database, now: datetime, limit: int = 200) -> list[WeComGroupMsgTask]:
    """Open tasks due for a look at their state, and 'creating' ones whose creator stopped answering."""
    async with db.read_session() as session:
        rows = await session.execute(
            select(WeComGroupMsgTask).where(or_(
                and_(WeComGroupMsgTask.status == OPEN, WeComGroupMsgTask.next_check_at <= now),  # type: ignore[operator]
                and_(WeComGroupMsgTask.status == CREATING, WeComGroupMsgTask.lease_until < now)))  # type: ignore[operator]
            .order_by(WeComGroupMsgTask.next_check_at, WeComGroupMsgTask.id).limit(limit))  # type: ignore[arg-type]
        return list(rows.scalars())


async def tasks_of_run(db: Database, run_id: int) -> list[WeComGroupMsgTask]:
    async with db.read_session() as session:
        rows = await session.execute(select(WeComGroupMsgTask).where(WeComGroupMsgTask.run_id == run_id)
                                     .order_by(WeComGroupMsgTask.id))  # type: ignore[arg-type]
        return list(rows.scalars())


# -- appchat/send limits ---------------------------------------------------------------------------------


async def take_appchat_send(db: Database, now: datetime, *, per_minute: int, per_day: int) -> float | None:
    """Count one appchat/send against the app's minute and day (UTC) windows; None if it may go now, else the
    seconds until the full window ends (nothing counted)."""
    windows = _appchat_windows(now, per_minute, per_day)
    wait: float | None = None
    try:
        async with db.session() as session:
            for key, period, cap, ends in windows:
                if cap <= 0:
                    continue
                # Windows that ended are of no use: keep the table small.
                await session.execute(delete(WeComQuota).where(WeComQuota.key == key, WeComQuota.period < period))
                if not await _take(session, key, period, cap):
                    wait = max(1.0, (ends - now).total_seconds())
                    raise _Undo
    except _Undo:
        return wait
    return None


async def give_back_appchat_send(db: Database, now: datetime, *, per_minute: int, per_day: int) -> None:
    """A send counted at `now` that WeCom refused (nothing was posted): not counted after all."""
    async with db.session() as session:
        for key, period, cap, _ in _appchat_windows(now, per_minute, per_day):
            if cap > 0:
                await _give_back(session, key, period)


def _appchat_windows(now: datetime, per_minute: int, per_day: int) -> list[tuple[str, str, int, datetime]]:
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    day = minute.replace(hour=0, minute=0)
    return [(APPCHAT_MINUTE, minute.strftime("%Y-%m-%dT%H:%M"), per_minute, minute + timedelta(minutes=1)),
            (APPCHAT_DAY, day.strftime("%Y-%m-%d"), per_day, day + timedelta(days=1))]
