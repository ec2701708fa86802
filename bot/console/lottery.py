"""The console's lottery routes: create (title, keyword, prizes, deadline, eligibility), the entrants, draw
now, cancel, redraw an unclaimed prize, and the published proof with its verification.

The domain code is the chat command's and the CLI's: handlers.lottery (check_definition, create_lottery:
the same checks as 抽奖 创建 and `qunbot lottery create`), storage.lottery (claim, record_draw, cancel,
redraw_winner, winners, entrant_rows), scheduler.lottery.draw_and_announce (the announcement, as at the deadline) and
storage.lottery.verify_stored, which recomputes a draw from its seed and the frozen entrant list exactly as
`qunbot lottery verify` does. Every change is audited with source "console".
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from bot.console import schema as s
from bot.console.api import GROUP_REF, PAGING, api, group_ref, ts
from bot.console.routes import WRITE, ApiError, ApiRequest, Param
from storage import lottery as store
from storage.db import utcnow
from storage.groups import Group

log = logging.getLogger("qunbot.console")
STATES = [store.OPEN, store.DRAWING, store.DRAWN, store.CANCELLED]
# Which form field a handlers.lottery.CreateProblem is about.
PROBLEM_FIELD = {"title": "title", "prize": "prizes", "prize_name": "prizes", "prize_duplicate": "prizes",
                 "no_prizes": "prizes", "too_many_winners": "prizes", "deadline": "deadline",
                 "deadline_past": "deadline", "deadline_far": "deadline", "keyword": "keyword",
                 "keyword_in_use": "keyword", "option": "min_days", "format": "title"}

PRIZE = s.obj({"name": s.string(), "stock": s.integer("how many"),
               "points": s.integer("points credited to each winner at the draw", nullable=True)})
SUMMARY = {
    "id": s.integer(), "group": GROUP_REF, "title": s.string(), "keyword": s.string("what members send to enter"),
    "status": s.string(enum=STATES), "deadline": s.timestamp(),
    "deadline_local": s.string("in the group's timezone"), "timezone": s.string(),
    "entrant_count": s.integer(), "prizes": s.array(PRIZE),
    "min_days": s.integer("days in the group to take part"), "exclude_admins": s.boolean(),
    "commitment": s.string("SHA-256 of the secret seed, public from the start"),
    "created_by": s.string(), "created_at": s.timestamp(), "drawn_at": s.timestamp(nullable=True),
    "announced_at": s.timestamp(nullable=True), "can_write": s.boolean(),
}
DETAIL = s.obj({
    **SUMMARY,
    "winners": s.array(s.obj({
        "prize": s.string(), "slot": s.integer("0-based place within the prize"),
        "pick": s.integer("position in the draw's pick sequence"), "user": s.string("platform user id"),
        "name": s.string(), "forfeited": s.boolean(), "forfeit_reason": s.string(nullable=True),
        "replaces_pick": s.integer("a redraw: the pick it replaces", nullable=True)})),
    "rounds": s.array(s.obj({"number": s.integer(), "kind": s.string("draw or redraw"), "first_pick": s.integer(),
                             "picks": s.integer(), "actor": s.string(), "reason": s.string(), "at": s.timestamp()})),
    "proof": s.obj({
        "commitment": s.string(), "seed": s.string("published at the draw (secret before)", nullable=True),
        "entrants_hash": s.string("SHA-256 of the sorted entrant ids joined by newlines", nullable=True),
        "entrant_count": s.integer()}),
    "verification": s.nullable(s.obj({
        "ok": s.boolean(), "problems": s.array(s.string(), "what differs, if anything"),
        "picks": s.integer("picks recomputed")})) | {
        "description": "recomputed now from the seed and the stored entrant list, as `qunbot lottery verify` "
                       "does; null before the draw"},
})


def _can_write(req: ApiRequest, lottery: store.Lottery) -> bool:
    return req.account.can_write and req.account.sees_group(lottery.group_id)


def summary_json(req: ApiRequest, lottery: store.Lottery, group: Group, prizes: list[store.LotteryPrize]) -> dict[str, Any]:
    from handlers.lottery import group_timezone, local_time

    tz = group_timezone(req.config, group)
    return {"id": lottery.id, "group": group_ref(group), "title": lottery.title, "keyword": lottery.keyword,
            "status": lottery.status, "deadline": ts(lottery.deadline), "deadline_local": local_time(lottery.deadline, tz),
            "timezone": tz, "entrant_count": lottery.entrant_count,
            "prizes": [{"name": p.name, "stock": p.stock, "points": p.points} for p in prizes],
            "min_days": lottery.min_days, "exclude_admins": lottery.exclude_admins, "commitment": lottery.commitment,
            "created_by": lottery.created_by, "created_at": ts(lottery.created_at), "drawn_at": ts(lottery.drawn_at),
            "announced_at": ts(lottery.announced_at), "can_write": _can_write(req, lottery)}


async def detail_json(req: ApiRequest, lottery_id: int) -> dict[str, Any]:
    async with req.db.read_session() as session:
        lottery = await store.get_lottery(session, lottery_id)
        if lottery is None:
            raise ApiError(404, "not_found")
        group = await session.get(Group, lottery.group_id)
        prizes = await store.prizes_of(session, lottery_id)
        winners = await store.winners(session, lottery_id)
        rounds = await store.rounds(session, lottery_id)
        drawn = lottery.status == store.DRAWN
        problems = await store.verify_stored(session, lottery) if drawn else []
    assert group is not None
    return {
        **summary_json(req, lottery, group, prizes),
        "winners": [{"prize": w.prize, "slot": w.slot, "pick": w.pick, "user": w.user, "name": w.name,
                     "forfeited": w.forfeited, "forfeit_reason": w.forfeit_reason, "replaces_pick": w.replaces_pick}
                    for w in winners],
        "rounds": [{"number": r.number, "kind": r.kind, "first_pick": r.first_pick, "picks": r.picks,
                    "actor": r.actor, "reason": r.reason, "at": ts(r.at)} for r in rounds],
        # The seed stays secret until the draw: publishing it earlier would let anyone predict the winners.
        "proof": {"commitment": lottery.commitment, "seed": lottery.seed if drawn else None,
                  "entrants_hash": lottery.entrants_hash if drawn else None, "entrant_count": lottery.entrant_count},
        "verification": {"ok": not problems, "problems": problems, "picks": len(winners)} if drawn else None,
    }


async def _visible(req: ApiRequest, lottery_id: int, *, write: bool = False) -> store.Lottery:
    async with req.db.read_session() as session:
        lottery = await store.get_lottery(session, lottery_id)
    if lottery is None:
        raise ApiError(404, "not_found")
    await req.group(lottery.group_id, write=write)
    return lottery


@api.route("GET", "/lotteries", summary="Lotteries, newest first", tag="lottery",
           params=[Param("group", s.integer("only this group's", minimum=1)),
                   Param("status", s.string(enum=STATES)),
                   Param("before", s.integer("lotteries older than this id (paging)", minimum=1)),
                   Param("limit", s.integer(minimum=1, maximum=200) | {"default": 50})],
           response=s.obj({"lotteries": s.array(s.obj(SUMMARY)),
                           "next_before": s.integer("pass as `before` for the next page", nullable=True)}))
async def list_lotteries(req: ApiRequest) -> dict[str, Any]:
    p = req.params
    group = await req.group(p["group"]) if p["group"] else None
    ids = frozenset({group.id}) if group is not None else req.visible_group_ids
    async with req.db.read_session() as session:
        rows = await store.list_lotteries(session, group_ids=ids, status=p["status"], before_id=p["before"],  # type: ignore[arg-type]
                                          limit=p["limit"])
        prizes = {lot.id: await store.prizes_of(session, lot.id) for lot, _ in rows}  # type: ignore[arg-type]
    return {"lotteries": [summary_json(req, lot, g, prizes[lot.id]) for lot, g in rows],
            "next_before": rows[-1][0].id if len(rows) == p["limit"] else None}


@api.route("POST", "/lotteries", summary="Create a lottery in a group", access=WRITE, tag="lottery",
           body=s.obj({
               "group_id": s.integer(minimum=1),
               "title": s.string(min_length=1, max_length=64),
               "prizes": s.array(s.obj({"name": s.string(min_length=1, max_length=32),
                                        "stock": s.integer(minimum=1, maximum=10_000)}),
                                 'in draw order; a name like "50积分" credits that many points'),
               "deadline": s.string('in the group\'s timezone: "2026-12-01 20:00", "明天 20:00", "30分钟后"',
                                    min_length=1, max_length=64),
               "keyword": s.string("what members send to enter; empty: lottery.default_keyword", max_length=32,
                                   nullable=True),
               "min_days": s.integer("days in the group to take part", minimum=0, maximum=3650),
               "exclude_admins": s.boolean("group admins may not take part"),
           }, required=["group_id", "title", "prizes", "deadline"]),
           response=DETAIL,
           description="Checked like 抽奖 创建 and `qunbot lottery create`; 400 names the field (title, prizes, "
                       "deadline, keyword). The commitment is public from now on; the seed stays secret until "
                       "the draw.")
async def create_lottery(req: ApiRequest) -> dict[str, Any]:
    from handlers.lottery import CreateProblem, check_definition, group_timezone
    from handlers.lottery import create_lottery as create

    body = req.body
    group = await req.group(body["group_id"], write=True)
    now = utcnow()
    try:
        definition = check_definition(
            req.config, set(req.runtime.registry.commands), title=body["title"],
            prizes=[f"{p['name']}:{p['stock']}" for p in body["prizes"]], deadline=body["deadline"],
            keyword=(body.get("keyword") or "").strip() or None, min_days=body.get("min_days") or 0,
            exclude_admins=bool(body.get("exclude_admins")), now=now, tz=group_timezone(req.config, group))
        lottery, _ = await create(req.db, group, definition, created_by=f"console:{req.account.username}", now=now)
    except CreateProblem as problem:
        raise ApiError(400, "bad_lottery", problem.render(req.runtime.templates),
                       field=PROBLEM_FIELD.get(problem.key, "title")) from None
    await req.audit("lottery create", group=group, args=body["title"],
                    detail=f"created lottery {lottery.id} {lottery.title!r}, commitment {lottery.commitment}")
    return await detail_json(req, lottery.id)  # type: ignore[arg-type]


@api.route("GET", "/lotteries/{lottery_id}", summary="A lottery: prizes, winners, rounds, proof and its verification",
           tag="lottery", response=DETAIL)
async def get_lottery(req: ApiRequest) -> dict[str, Any]:
    lottery = await _visible(req, req.params["lottery_id"])
    return await detail_json(req, lottery.id)  # type: ignore[arg-type]


@api.route("GET", "/lotteries/{lottery_id}/entrants", summary="A lottery's entrants, in the order they joined",
           tag="lottery", params=PAGING,
           response=s.obj({"entrants": s.array(s.obj({"user": s.string("platform user id (what the list hashes)"),
                                                      "name": s.string(), "joined_at": s.timestamp()})),
                           "total": s.integer(), "page": s.integer(), "per_page": s.integer()}))
async def list_entrants(req: ApiRequest) -> dict[str, Any]:
    lottery = await _visible(req, req.params["lottery_id"])
    page, per_page = req.params["page"], req.params["per_page"]
    async with req.db.read_session() as session:
        rows, total = await store.entrant_rows(session, lottery.id, offset=(page - 1) * per_page,  # type: ignore[arg-type]
                                               limit=per_page)
    return {"entrants": [{"user": e.user, "name": e.name, "joined_at": ts(e.joined_at)} for e in rows],
            "total": total, "page": page, "per_page": per_page}


@api.route("POST", "/lotteries/{lottery_id}/draw", summary="Draw a lottery now and announce it", access=WRITE,
           tag="lottery", response=DETAIL,
           description="Freezes the entrant list, draws with the published algorithm and posts the result into the "
                       "group where its door can (else the scheduled job retries; members can ask 抽奖 结果). "
                       "400 when it is not open.")
async def draw_lottery(req: ApiRequest) -> dict[str, Any]:
    from scheduler.lottery import draw_and_announce

    lottery = await _visible(req, req.params["lottery_id"], write=True)
    group = await req.group(lottery.group_id)
    actor = f"console:{req.account.username}"
    holder = f"{actor}:{secrets.token_hex(4)}"
    claimed = await store.claim(req.db, lottery.id, holder=holder, lease_seconds=req.config.lottery.lease_seconds,  # type: ignore[arg-type]
                                now=utcnow(), early=True, group_id=lottery.group_id)
    drawn = claimed is not None and await store.record_draw(req.db, lottery.id, holder=holder, actor=actor,  # type: ignore[arg-type]
                                                            now=utcnow())
    if not drawn:
        async with req.db.read_session() as session:
            fresh = await store.get_lottery(session, lottery.id)  # type: ignore[arg-type]
        status = fresh.status if fresh else lottery.status
        await req.audit("lottery draw", group=group, args=str(lottery.id), result="usage",
                        detail=f"lottery {lottery.id} is {status}: not drawn")
        raise ApiError(400, "lottery_not_open", req.console.text(f"lottery.status_{status}"))
    async with req.db.read_session() as session:
        fresh = await store.get_lottery(session, lottery.id)  # type: ignore[arg-type]
    assert fresh is not None
    await req.audit("lottery draw", group=group, args=str(lottery.id),
                    detail=f"drew lottery {lottery.id}: {fresh.entrant_count} entrants, seed {fresh.seed}")
    # Announce now, as the scheduled job would at the deadline (it retries if the door cannot take it now).
    await draw_and_announce(req.runtime, lottery.id, holder)  # type: ignore[arg-type]
    return await detail_json(req, lottery.id)  # type: ignore[arg-type]


@api.route("POST", "/lotteries/{lottery_id}/cancel", summary="Cancel an open lottery", access=WRITE, tag="lottery",
           response=DETAIL, description="400 when it is being drawn, drawn or cancelled already.")
async def cancel_lottery(req: ApiRequest) -> dict[str, Any]:
    lottery = await _visible(req, req.params["lottery_id"], write=True)
    group = await req.group(lottery.group_id)
    async with req.db.session() as session:
        done = await store.cancel(session, lottery.id, lottery.group_id, utcnow())  # type: ignore[arg-type]
    if not done:
        await req.audit("lottery cancel", group=group, args=str(lottery.id), result="usage",
                        detail=f"lottery {lottery.id} is {lottery.status}: not cancelled")
        raise ApiError(400, "lottery_not_open", req.console.text(f"lottery.status_{lottery.status}"))
    await req.audit("lottery cancel", group=group, args=str(lottery.id), detail=f"cancelled lottery {lottery.id}")
    return await detail_json(req, lottery.id)  # type: ignore[arg-type]


@api.route("POST", "/lotteries/{lottery_id}/redraw", summary="Redraw a prize whose winner did not claim it",
           access=WRITE, tag="lottery",
           body=s.obj({"prize": s.string("the prize's name", min_length=1, max_length=32),
                       "winner": s.string("the winner who forfeits it: platform user id (or name)", min_length=1,
                                          max_length=128),
                       "reason": s.string("why it is forfeited (shown in the result and the audit log)",
                                          min_length=1, max_length=255)}),
           response=DETAIL,
           description="What 抽奖 重抽 and `qunbot lottery redraw` do (storage.lottery.redraw_winner): the winner "
                       "forfeits the prize and the next pick of the same seeded shuffle gets it, so the proof still "
                       "verifies; the group is told where its door can post. 400 (bad_redraw) with the reason when "
                       "the lottery is not drawn, the prize is unknown or a points prize, or that member holds no "
                       "such prize.")
async def redraw_lottery(req: ApiRequest) -> dict[str, Any]:
    from bot.events import Reply
    from scheduler.lottery import publish_draw

    lottery = await _visible(req, req.params["lottery_id"], write=True)
    group = await req.group(lottery.group_id)
    body = req.body
    prize, who = body["prize"].strip(), body["winner"].strip()
    reason = body["reason"].strip() or req.runtime.templates.raw("lottery.default_reason")
    args = f"{lottery.id} {prize} {who} {reason}"
    try:
        async with req.db.session() as session:
            fresh = await store.redraw_winner(session, lottery, prize_name=prize, who=who, reason=reason,
                                              actor=f"console:{req.account.username}", now=utcnow())
    except store.LotteryError as exc:
        await req.audit("lottery redraw", group=group, args=args, result="usage", detail=str(exc))
        text = req.runtime.templates.render(f"lottery.err_{exc.code}", who=who.lstrip("@"), prize=prize,
                                            id=lottery.id, title=lottery.title)
        raise ApiError(400, "bad_redraw", text,
                       field="winner" if exc.code == "not_a_winner" else "prize" if "prize" in exc.code else None
                       ) from None
    async with req.db.read_session() as session:
        views = {w.pick: w for w in await store.winners(session, lottery.id)}  # type: ignore[arg-type]
    new = views[fresh.pick]
    old = views[new.replaces_pick]  # type: ignore[index]
    await req.audit("lottery redraw", group=group, args=args,
                    detail=f"lottery {lottery.id} {prize}: {old.user} forfeited ({reason}), pick {new.pick} -> {new.user}")
    # Tell the group (or, in a 1:1 scope, the new winner) as the chat command's answer does.
    announcement = Reply(req.runtime.templates.render(
        "lottery.redrawn", id=lottery.id, title=lottery.title, prize=prize, old=old.name, new=new.name, reason=reason,
        pick=new.pick), mentions=[new.user])
    try:
        await publish_draw(req.runtime, lottery, announcement)
    except Exception:
        log.warning("lottery redraw not announced", exc_info=True, extra={"lottery": lottery.id})
    return await detail_json(req, lottery.id)  # type: ignore[arg-type]
