"""抽奖 (/lottery): verifiable lotteries in chat, and the join keyword members send to take part.

Members list the open lotteries and read results with their proof; group admins create, draw, cancel and
redraw (checked and audited here, since one command serves both). Members join by sending a lottery's
keyword; this text handler runs before the FAQ and marks the message handled.

The rules (one entry per member, frozen list, prize stock) are kept by storage.lottery; the draw is
bot.lottery_draw; the scheduled draw at the deadline is scheduler.lottery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError

from bot.config import Config
from bot.dispatcher import Context, Registry, UsageError, normalize_command_word, normalize_text
from bot.events import Command, Reply, TextMessage
from bot.permissions import Role
from bot.templates import Templates
from storage import audit as audit_store
from storage import lottery as store
from storage.db import Database
from storage.groups import Group
from storage.lottery import JoinOutcome, Lottery, LotteryError, LotteryPrize, PrizeSpec

LIST_WORDS = {"列表", "查看", "list"}
CREATE_WORDS = {"创建", "新建", "发起", "create"}
DRAW_WORDS = {"开奖", "draw"}
CANCEL_WORDS = {"取消", "cancel"}
REDRAW_WORDS = {"重抽", "redraw"}
RESULT_WORDS = {"结果", "result"}
TITLE_MAX = 64
PRIZE_NAME_MAX = 32
KEYWORD_MAX = 32

USAGE = ("抽奖 [列表 | 结果 编号]；管理员：抽奖 创建 标题 | 一等奖x1, 二等奖x3 | 2026-12-01 20:00 "
         "[| 关键词 参加抽奖 | 入群满 3 天 | 不含管理员]，抽奖 开奖 编号，抽奖 取消 编号，"
         "抽奖 重抽 编号 奖品 @中奖人 [原因]")


# How many lotteries are open in the speaker's group, read with the speaker (Registry.probe).
PROBE_OPEN = "lottery.open"


def setup(registry: Registry) -> None:
    from scheduler.lottery import start_due_draw_job

    registry.command("抽奖", "/lottery", description="查看和参加抽奖；管理员创建、开奖、重抽", usage=USAGE,
                     role=Role.MEMBER, audited=False)(lottery_command)
    registry.on(TextMessage)(join_by_keyword)
    registry.probe(PROBE_OPEN, f"SELECT count(*) FROM lotteries WHERE group_id = g.id AND status = '{store.OPEN}'")  # noqa: S608
    registry.on_startup(start_due_draw_job)


# -- parsing what admins type ------------------------------------------------------------------------


class CreateProblem(Exception):
    """A mistake in a lottery's definition: `key` names its text in lottery.toml (err_<key>)."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key = key
        self.values = values

    def render(self, templates: Templates) -> str:
        return templates.render(f"lottery.err_{self.key}", **self.values)


_PRIZE = re.compile(r"^(.+?)\s*(?:[x×X*:]\s*(\d+)\s*(?:个|份|名|人)?)?$")
_POINTS = re.compile(r"^(\d+)\s*积分$")
_RELATIVE = re.compile(r"^(\d+)\s*(分钟|小时|天)后$")
_DAY_WORD = re.compile(r"^(今天|明天|后天)\s*(\d{1,2})(?::(\d{2})|点(?:(\d{1,2})分?|半)?)?$")
_ABSOLUTE = re.compile(r"^(?:(\d{4})[-/.年])?(\d{1,2})[-/.月](\d{1,2})日?\s*(\d{1,2}):(\d{2})$")
_KEYWORD = re.compile(r"^(?:关键词|关键字|口令)\s*:?\s*(.+)$")
_MIN_DAYS = re.compile(r"^入群(?:满|超过)?\s*(\d+)\s*天(?:以上)?$")
_NO_ADMINS = re.compile(r"^(?:不含|排除|不包括|不包含)管理员$")


def parse_prizes(texts: list[str], max_winners: int) -> list[PrizeSpec]:
    """Prizes as typed: "一等奖x1", "二等奖×3", "一等奖:1" (the CLI's form), "50积分x2" (points)."""
    prizes: list[PrizeSpec] = []
    for raw in texts:
        item = normalize_text(raw)
        if not item:
            continue
        found = _PRIZE.match(item)
        if found is None:
            raise CreateProblem("prize", text=item)
        name, stock = found.group(1).strip(), int(found.group(2) or 1)
        if not name or stock < 1:
            raise CreateProblem("prize", text=item)
        if len(name) > PRIZE_NAME_MAX:
            raise CreateProblem("prize_name", text=name, max=PRIZE_NAME_MAX)
        if any(p.name == name for p in prizes):
            raise CreateProblem("prize_duplicate", name=name)
        points = _POINTS.match(name)
        prizes.append(PrizeSpec(name, stock, int(points.group(1)) if points else None))
    if not prizes:
        raise CreateProblem("no_prizes")
    total = sum(p.stock for p in prizes)
    if total > max_winners:
        raise CreateProblem("too_many_winners", total=total, max=max_winners)
    return prizes


def parse_deadline(text: str, *, now: datetime, tz: str) -> datetime:
    """A deadline typed in the group's timezone: "2026-12-01 20:00", "12-01 20:00", "明天 20:00",
    "今天 8点半", "30分钟后", "2小时后", "3天后". Returned in UTC."""
    value = normalize_text(text)
    zone = ZoneInfo(tz)
    local_now = now.astimezone(zone)
    if found := _RELATIVE.match(value):
        amount, unit = int(found.group(1)), found.group(2)
        delta = {"分钟": timedelta(minutes=amount), "小时": timedelta(hours=amount), "天": timedelta(days=amount)}[unit]
        return now + delta
    day: date | None = None
    hour = minute = 0
    if found := _DAY_WORD.match(value):
        day = local_now.date() + timedelta(days=("今天", "明天", "后天").index(found.group(1)))
        hour = int(found.group(2))
        minute = 30 if value.endswith("半") else int(found.group(3) or found.group(4) or 0)
    elif found := _ABSOLUTE.match(value):
        year = int(found.group(1)) if found.group(1) else local_now.year
        try:
            day = date(year, int(found.group(2)), int(found.group(3)))
        except ValueError:
            raise CreateProblem("deadline", text=value) from None
        hour, minute = int(found.group(4)), int(found.group(5))
    if day is None or hour > 23 or minute > 59:
        raise CreateProblem("deadline", text=value)
    return datetime.combine(day, time(hour, minute), zone).astimezone(now.tzinfo)


@dataclass
class Definition:
    """A lottery as an admin defined it, checked."""

    title: str
    prizes: list[PrizeSpec]
    deadline: datetime
    keyword: str
    min_days: int = 0
    exclude_admins: bool = False


def check_definition(config: Config, command_words: set[str], *, title: str, prizes: list[str], deadline: str,
                     keyword: str | None, min_days: int, exclude_admins: bool, now: datetime,
                     tz: str) -> Definition:
    """Validate a lottery's definition (chat or CLI); CreateProblem names what is wrong."""
    cfg = config.lottery
    title = normalize_text(title)
    if not title or len(title) > TITLE_MAX:
        raise CreateProblem("title", max=TITLE_MAX)
    specs = parse_prizes(prizes, cfg.max_winners)
    when = parse_deadline(deadline, now=now, tz=tz)
    if when <= now:
        raise CreateProblem("deadline_past", deadline=local_time(when, tz))
    if when > now + timedelta(days=cfg.max_days_ahead):
        raise CreateProblem("deadline_far", days=cfg.max_days_ahead)
    word = normalize_text(keyword if keyword is not None else cfg.default_keyword)
    first = normalize_command_word(word.split(" ")[0]) if word else ""
    if not word or len(word) > KEYWORD_MAX or word.startswith("@") or first in command_words:
        raise CreateProblem("keyword", keyword=word)
    if min_days < 0:
        raise CreateProblem("option", text=str(min_days))
    return Definition(title, specs, when, word, min_days, exclude_admins)


def parse_chat_definition(args: str) -> dict[str, object]:
    """`标题 | 奖品, 奖品 | 截止 | 选项 …` as typed after 抽奖 创建 (full-width ｜ and ， work too)."""
    parts = [p.strip() for p in normalize_text(args).split("|")]
    if len(parts) < 3 or not all(parts[:3]):
        raise CreateProblem("format")
    keyword: str | None = None
    min_days, exclude_admins = 0, False
    for option in parts[3:]:
        if not option:
            continue
        if found := _KEYWORD.match(option):
            keyword = found.group(1).strip()
        elif found := _MIN_DAYS.match(option):
            min_days = int(found.group(1))
        elif _NO_ADMINS.match(option):
            exclude_admins = True
        else:
            raise CreateProblem("option", text=option)
    return {"title": parts[0], "prizes": re.split(r"[,;、]", parts[1]), "deadline": parts[2],
            "keyword": keyword, "min_days": min_days, "exclude_admins": exclude_admins}


async def create_lottery(db: Database, group: Group, definition: Definition, *, created_by: str, now: datetime,
                         event_id: int | None = None) -> tuple[Lottery, list[LotteryPrize]]:
    """Store a checked definition; CreateProblem('keyword_in_use') also when a concurrent creation won."""
    try:
        async with db.session() as session:
            return await store.create_lottery(
                session, group_id=group.id, title=definition.title, keyword=definition.keyword,  # type: ignore[arg-type]
                deadline=definition.deadline, prizes=definition.prizes, min_days=definition.min_days,
                exclude_admins=definition.exclude_admins, created_by=created_by, now=now, event_id=event_id)
    except LotteryError as exc:
        raise CreateProblem(exc.code, keyword=definition.keyword) from None
    except IntegrityError:
        raise CreateProblem("keyword_in_use", keyword=definition.keyword) from None


# -- texts -------------------------------------------------------------------------------------------


def local_time(at: datetime, tz: str) -> str:
    return at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def group_timezone(config: Config, group: Group) -> str:
    return group.timezone or config.timezone


def render_prizes(t: Templates, prizes: list[LotteryPrize]) -> str:
    return t.raw("lottery.prize_separator").join(t.render("lottery.prize_item", name=p.name, stock=p.stock)
                                                 for p in prizes)


def render_conditions(t: Templates, lottery: Lottery) -> str:
    conditions = []
    if lottery.min_days:
        conditions.append(t.render("lottery.condition_min_days", days=lottery.min_days))
    if lottery.exclude_admins:
        conditions.append(t.raw("lottery.condition_no_admins"))
    if not conditions:
        return ""
    return t.render("lottery.conditions_line", conditions=t.raw("lottery.condition_separator").join(conditions))


def render_created(t: Templates, lottery: Lottery, prizes: list[LotteryPrize], tz: str) -> str:
    return t.render("lottery.created", id=lottery.id, title=lottery.title, prizes=render_prizes(t, prizes),
                    deadline=local_time(lottery.deadline, tz), keyword=lottery.keyword,
                    conditions=render_conditions(t, lottery), commitment=lottery.commitment)


def _winner_lines(t: Templates, prizes: list[LotteryPrize], winners: list[store.WinnerView]) -> str:
    lines = []
    for prize in prizes:
        names = [t.render("lottery.winner_name", name=w.name) for w in winners
                 if w.prize == prize.name and not w.forfeited]
        lines.append(t.render("lottery.announce_prize_line", prize=prize.name,
                              winners=t.raw("lottery.winner_separator").join(names) or t.raw("lottery.no_winner")))
    return "\n".join(lines)


async def announcement(db: Database, templates: Templates, lottery_id: int) -> Reply:
    """The draw's announcement: winners by prize, @-mentioning them, with seed and entrant-list hash."""
    async with db.session() as session:
        lottery = await store.get_lottery(session, lottery_id)
        assert lottery is not None and lottery.status == store.DRAWN
        prizes = await store.prizes_of(session, lottery_id)
        winners = await store.winners(session, lottery_id)
    t = templates
    text = "\n".join([
        t.render("lottery.announce_header", id=lottery.id, title=lottery.title),
        _winner_lines(t, prizes, winners),
        t.render("lottery.announce_footer", id=lottery.id, count=lottery.entrant_count, seed=lottery.seed,
                 entrants_hash=lottery.entrants_hash, commitment=lottery.commitment),
    ])
    return Reply(text, mentions=[w.user for w in winners if not w.forfeited])


async def render_result(db: Database, templates: Templates, lottery: Lottery, tz: str) -> str:
    """抽奖 结果: winners, forfeits and redraws, and the published proof with how to check it."""
    t = templates
    common = {"id": lottery.id, "title": lottery.title, "commitment": lottery.commitment,
              "deadline": local_time(lottery.deadline, tz)}
    if lottery.status == store.CANCELLED:
        return t.render("lottery.is_cancelled", **common)
    if lottery.status == store.OPEN:
        return t.render("lottery.not_drawn", **common)
    if lottery.status == store.DRAWING:
        return t.render("lottery.drawing", **common)
    async with db.session() as session:
        prizes = await store.prizes_of(session, lottery.id)  # type: ignore[arg-type]
        winners = await store.winners(session, lottery.id)  # type: ignore[arg-type]
    by_pick = {w.pick: w for w in winners}
    redraws = "".join(
        t.render("lottery.redraw_line", prize=w.prize, name=by_pick[w.replaces_pick].name,
                 reason=by_pick[w.replaces_pick].forfeit_reason or "", pick=w.pick)
        for w in winners if w.replaces_pick is not None and w.replaces_pick in by_pick)
    return t.render("lottery.result", winners=_winner_lines(t, prizes, winners), redraws=redraws,
                    count=lottery.entrant_count, seed=lottery.seed, entrants_hash=lottery.entrants_hash, **common)


# -- the command -------------------------------------------------------------------------------------


async def lottery_command(event: Command, ctx: Context) -> Reply:
    words = event.args.split(" ") if event.args else []
    action = words[0].lower() if words else ""
    rest = event.args[len(words[0]):].strip() if words else ""
    if not action or action in LIST_WORDS:
        return Reply(await _list_open(ctx))
    if action in RESULT_WORDS:
        lottery = await _lottery_named(ctx, rest)
        return Reply(await render_result(ctx.db, ctx.templates, lottery, ctx.timezone))
    admin_actions = {**dict.fromkeys(CREATE_WORDS, ("抽奖 创建", _create)),
                     **dict.fromkeys(DRAW_WORDS, ("抽奖 开奖", _draw)),
                     **dict.fromkeys(CANCEL_WORDS, ("抽奖 取消", _cancel)),
                     **dict.fromkeys(REDRAW_WORDS, ("抽奖 重抽", _redraw))}
    if action not in admin_actions:
        raise UsageError(ctx.templates.render("lottery.err_action", action=words[0]))
    name, run = admin_actions[action]
    return await _as_admin(event, ctx, name, lambda: run(event, ctx, rest))


async def _as_admin(event: Command, ctx: Context, name: str, run) -> Reply:  # noqa: ANN001 - a coroutine factory
    """An admin sub-command: checked against the caller's role and written to the audit log with its result."""
    t = ctx.templates
    role = await ctx.role()
    if role < Role.GROUP_ADMIN:
        await _audit(event, ctx, name, audit_store.REFUSED, f"caller is {role.label}")
        return Reply(t.render("command.refused", name=name, role=t.raw("roles.group_admin")))
    try:
        reply: Reply = await run()
    except UsageError as exc:
        await _audit(event, ctx, name, audit_store.USAGE, str(exc))
        raise
    except Exception as exc:
        await _audit(event, ctx, name, audit_store.ERROR, f"{type(exc).__name__}: {exc}")
        raise
    await _audit(event, ctx, name, audit_store.OK, ctx.audit_detail or reply.text)
    return reply


async def _audit(event: Command, ctx: Context, name: str, result: str, detail: str) -> None:
    async with ctx.db.session() as session:
        await audit_store.record(session, source="chat", channel=event.channel,
                                 group=ctx.group_row.external_id if ctx.group_row else "", actor=event.sender.user,
                                 command=name, args=event.args, result=result, detail=detail[:500], at=event.at)


async def _list_open(ctx: Context) -> str:
    t = ctx.templates
    assert ctx.group_row is not None
    async with ctx.db.session() as session:
        found = [(lot, await store.prizes_of(session, lot.id))  # type: ignore[arg-type]
                 for lot in await store.open_in_group(session, ctx.group_row.id)]  # type: ignore[arg-type]
    if not found:
        return t.raw("lottery.list_empty")
    lines = [t.raw("lottery.list_header")]
    for lot, prizes in found:
        lines.append(t.render("lottery.list_line", id=lot.id, title=lot.title, prizes=render_prizes(t, prizes),
                              deadline=local_time(lot.deadline, ctx.timezone), keyword=lot.keyword,
                              count=lot.entrant_count, conditions=render_conditions(t, lot),
                              commitment=lot.commitment))
    lines.append(t.raw("lottery.list_footer"))
    return "\n".join(lines)


async def _lottery_named(ctx: Context, text: str) -> Lottery:
    """The lottery of this group whose number starts `text`; UsageError if there is none."""
    t = ctx.templates
    number = text.split(" ")[0].lstrip("#") if text else ""
    if not number.isdigit():
        raise UsageError(t.raw("lottery.err_id"))
    assert ctx.group_row is not None
    async with ctx.db.session() as session:
        lottery = await store.get_lottery(session, int(number), ctx.group_row.id)
    if lottery is None:
        raise UsageError(t.render("lottery.not_found", id=number))
    return lottery


async def _create(event: Command, ctx: Context, rest: str) -> Reply:
    t = ctx.templates
    assert ctx.group_row is not None
    tz = ctx.timezone
    if event.id is not None:
        async with ctx.db.session() as session:
            done = await store.created_by_event(session, event.id)
            if done is not None:  # this very command was processed before a crash: answer the same
                return Reply(render_created(t, done, await store.prizes_of(session, done.id), tz))  # type: ignore[arg-type]
    try:
        definition = check_definition(ctx.config, set(ctx.runtime.registry.commands), now=event.at, tz=tz,
                                      **parse_chat_definition(rest))  # type: ignore[arg-type]
        lottery, prizes = await create_lottery(ctx.db, ctx.group_row, definition, created_by=event.sender.user,
                                               now=event.at, event_id=event.id)
    except CreateProblem as problem:
        raise UsageError(problem.render(t)) from None
    ctx.audit_detail = f"created lottery {lottery.id} {lottery.title!r}, commitment {lottery.commitment}"
    return Reply(render_created(t, lottery, prizes, tz))


async def _draw(event: Command, ctx: Context, rest: str) -> Reply:
    from scheduler.lottery import publish_draw

    t = ctx.templates
    lottery = await _lottery_named(ctx, rest)
    common = {"id": lottery.id, "title": lottery.title}
    holder = f"chat:{event.channel}:{event.id if event.id is not None else event.key}"
    claimed = await store.claim(ctx.db, lottery.id, holder=holder, lease_seconds=ctx.config.lottery.lease_seconds,  # type: ignore[arg-type]
                                now=event.at, early=True, group_id=lottery.group_id)
    if claimed is not None:
        await store.record_draw(ctx.db, lottery.id, holder=holder, actor=f"chat:{event.sender.user}",  # type: ignore[arg-type]
                                now=event.at, announced=True)
    async with ctx.db.session() as session:
        lottery = await store.get_lottery(session, lottery.id)  # type: ignore[arg-type,assignment]
    assert lottery is not None
    if lottery.status == store.CANCELLED:
        return Reply(t.render("lottery.is_cancelled", **common))
    if lottery.status != store.DRAWN:
        return Reply(t.render("lottery.drawing", **common))
    reply = await announcement(ctx.db, t, lottery.id)  # type: ignore[arg-type]
    ctx.audit_detail = f"drew lottery {lottery.id}: {lottery.entrant_count} entrants, seed {lottery.seed}"
    if claimed is None:
        reply = Reply(f"{t.render('lottery.already_drawn', **common)}\n{reply.text}", mentions=reply.mentions)
    else:
        # Where the group is the 1:1 scope, the winners hear it from the bot directly.
        await publish_draw(ctx.runtime, lottery, reply, only_direct=True)
    return reply


async def _cancel(event: Command, ctx: Context, rest: str) -> Reply:
    t = ctx.templates
    lottery = await _lottery_named(ctx, rest)
    async with ctx.db.session() as session:
        done = await store.cancel(session, lottery.id, lottery.group_id, event.at)  # type: ignore[arg-type]
    common = {"id": lottery.id, "title": lottery.title}
    if done or lottery.status == store.CANCELLED:
        return Reply(t.render("lottery.cancelled", **common))
    ctx.audit_detail = f"lottery {lottery.id} is {lottery.status}: not cancelled"
    return Reply(t.render("lottery.cannot_cancel", **common))


async def _redraw(event: Command, ctx: Context, rest: str) -> Reply:
    t = ctx.templates
    words = rest.split(" ") if rest else []
    if len(words) < 3:
        raise UsageError(t.raw("lottery.err_redraw"))
    lottery = await _lottery_named(ctx, words[0])
    prize, who = words[1], words[2]
    reason = " ".join(words[3:]) or t.raw("lottery.default_reason")
    common = {"id": lottery.id, "title": lottery.title, "prize": prize}
    async with ctx.db.session() as session:
        previous = await store.redraw_by_event(session, event.id) if event.id is not None else None
    if previous is not None:  # this very command was processed before a crash: answer the same
        new_pick = previous[1].pick
    else:
        try:
            async with ctx.db.session() as session:
                winner = await store.redraw_winner(session, lottery, prize_name=prize, who=who,
                                                   actor=f"chat:{event.sender.user}", reason=reason, now=event.at,
                                                   event_id=event.id)
                new_pick = winner.pick
        except LotteryError as exc:
            raise UsageError(t.render(f"lottery.err_{exc.code}", who=who.lstrip("@"), **common)) from None
    async with ctx.db.session() as session:
        views = {w.pick: w for w in await store.winners(session, lottery.id)}  # type: ignore[arg-type]
    new = views[new_pick]
    old = views[new.replaces_pick]  # type: ignore[index]
    ctx.audit_detail = f"lottery {lottery.id} {prize}: {old.user} forfeited ({old.forfeit_reason}), pick {new.pick} -> {new.user}"
    return Reply(t.render("lottery.redrawn", old=old.name, new=new.name, reason=old.forfeit_reason or "",
                          pick=new.pick, **common), mentions=[new.user])


# -- joining with the keyword ------------------------------------------------------------------------


def _keyword_of(text: str) -> str:
    """The message as a keyword candidate: normalised like commands, after any leading @-mentions."""
    words = normalize_text(text).split(" ")
    while words and words[0].startswith("@"):
        words.pop(0)
    return normalize_command_word(" ".join(words))


async def join_by_keyword(event: TextMessage, ctx: Context) -> Reply | None:
    """A member sent an open lottery's keyword in its group (or 1:1 scope): check eligibility and enter."""
    if type(event) is not TextMessage or ctx.group_row is None or ctx.member_row is None or ctx.handled:
        return None
    if "\n" in event.sender.user:
        return None  # not an id the published entrant list (one id per line) could hold
    candidate = _keyword_of(event.text)
    if not candidate or len(candidate) > KEYWORD_MAX:
        return None  # cheap exit for ordinary chat: no keyword is this long
    if ctx.probes.get(PROBE_OPEN, 1) == 0:
        return None  # read with the speaker: the group has no open lottery
    wanted = next((lottery_id for lottery_id, keyword in await store.open_keywords(ctx.db, ctx.group_row.id)  # type: ignore[arg-type]
                   if normalize_command_word(keyword) == candidate), None)
    if wanted is None:
        return None
    async with ctx.db.session() as session:
        lottery = await session.get(store.Lottery, wanted)
    if lottery is None:
        return None
    ctx.handled = True
    t = ctx.templates
    common = {"name": ctx.member_row.name or event.sender.name or event.sender.user, "title": lottery.title,
              "deadline": local_time(lottery.deadline, ctx.timezone), "days": lottery.min_days}
    mention = [event.sender.user]
    if lottery.deadline <= event.at:
        return Reply(t.render("lottery.closed", **common), mentions=mention)
    if lottery.exclude_admins and await ctx.role() >= Role.GROUP_ADMIN:
        return Reply(t.render("lottery.admins_excluded", **common), mentions=mention)
    async with ctx.db.session() as session:
        if lottery.min_days:
            since = await store.member_since(session, ctx.group_row.id, ctx.member_row.id)  # type: ignore[arg-type]
            if since is None or event.at - since < timedelta(days=lottery.min_days):
                return Reply(t.render("lottery.too_new", **common), mentions=mention)
        outcome, count = await store.join(session, lottery, member_id=ctx.member_row.id, user=event.sender.user,  # type: ignore[arg-type]
                                          at=event.at, event_id=event.id, max_entrants=ctx.config.lottery.max_entrants)
    key = {JoinOutcome.JOINED: "joined", JoinOutcome.ALREADY: "already", JoinOutcome.CLOSED: "closed",
           JoinOutcome.FULL: "full"}[outcome]
    return Reply(t.render(f"lottery.{key}", count=count, **common), mentions=mention)
