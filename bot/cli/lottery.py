"""`qunbot lottery`: create, list, show, draw, redraw, cancel and verify lotteries from the command line.

Admin actions (create, draw, redraw, cancel) are written to the audit log with source "cli" and the OS
user as actor. A draw made here is announced by the running bot's scheduled job (this process has no
doors). `verify` recomputes a drawn lottery from its published seed and the stored, frozen entrant list.
"""

from __future__ import annotations

import argparse
import secrets

from bot import lottery_draw
from bot.cli import UsageProblem, open_database
from bot.cli.common import cli_actor, problem, record
from bot.config import Config
from bot.dispatcher import Registry
from bot.templates import Templates
from storage import audit as audit_store
from storage import groups as group_store
from storage import lottery as store
from storage.db import Database, utcnow


def register(sub: argparse._SubParsersAction) -> None:
    lottery = sub.add_parser("lottery", help="verifiable lotteries: create, list, show, draw, redraw, cancel, verify")
    lsub = lottery.add_subparsers(dest="lottery_command", required=True, metavar="LOTTERY_COMMAND")

    create = lsub.add_parser("create", help="create a lottery in a group (its commitment is printed)")
    _group_args(create)
    create.add_argument("--title", required=True, help="the lottery's title")
    create.add_argument("--prize", action="append", required=True, metavar="NAME:STOCK",
                        help='a prize and how many, e.g. "一等奖:1" (repeat for each prize, in draw order)')
    create.add_argument("--deadline", required=True,
                        help='when it is drawn, in the group\'s timezone: "2026-12-01 20:00", "明天 20:00", "30分钟后"')
    create.add_argument("--keyword", help="the join keyword (default: lottery.default_keyword)")
    create.add_argument("--min-days", type=int, default=0, help="minimum days in the group to take part")
    create.add_argument("--exclude-admins", action="store_true", help="group admins may not take part")
    create.set_defaults(handler=_create)

    listing = lsub.add_parser("list", help="list lotteries, newest first")
    listing.add_argument("--group", help="only this group (its id on the channel)")
    listing.add_argument("--channel", help="only this channel")
    listing.set_defaults(handler=_list)

    show = lsub.add_parser("show", help="a lottery's details, winners and proof")
    show.add_argument("id", type=int, help="the lottery's number")
    show.add_argument("--entrants", action="store_true",
                      help="print only the frozen entrant list, exactly as hashed (sorted ids, one per line)")
    show.set_defaults(handler=_show)

    draw = lsub.add_parser("draw", help="draw a lottery now (the running bot announces it)")
    draw.add_argument("id", type=int, help="the lottery's number")
    draw.set_defaults(handler=_draw)

    redraw = lsub.add_parser("redraw", help="forfeit an unclaimed prize's winner and redraw that prize")
    redraw.add_argument("id", type=int, help="the lottery's number")
    redraw.add_argument("--prize", required=True, help="the prize's name")
    redraw.add_argument("--winner", required=True, help="the winner who did not claim it (user id or name)")
    redraw.add_argument("--reason", default="unclaimed", help='why it is forfeited (default: "unclaimed")')
    redraw.set_defaults(handler=_redraw)

    cancel = lsub.add_parser("cancel", help="cancel an open lottery")
    cancel.add_argument("id", type=int, help="the lottery's number")
    cancel.set_defaults(handler=_cancel)

    verify = lsub.add_parser("verify", help="recompute a drawn lottery from its seed and entrant list (exit 0 OK, 1 not)")
    verify.add_argument("id", type=int, help="the lottery's number")
    verify.set_defaults(handler=_verify)


def _group_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group", required=True, help="the group id on its channel (e.g. g1, a WeCom chat id, "
                                                       "or @direct for the door's 1:1 scope)")
    parser.add_argument("--channel", default="simulator", help="the channel the group is on (default: simulator)")


async def _create(config: Config, args: argparse.Namespace) -> int:
    from handlers import load_features
    from handlers.lottery import (
        CreateProblem,
        check_definition,
        create_lottery,
        group_timezone,
        render_created,
    )

    templates = Templates(config.templates.file or None)
    commands = set(load_features(Registry()).commands)
    now = utcnow()
    async with open_database(config) as db:
        async with db.session() as session:
            group = await group_store.ensure_group(session, args.channel, args.group)
        tz = group_timezone(config, group)
        try:
            definition = check_definition(config, commands, title=args.title, prizes=args.prize,
                                          deadline=args.deadline, keyword=args.keyword, min_days=args.min_days,
                                          exclude_admins=args.exclude_admins, now=now, tz=tz)
            lottery, prizes = await create_lottery(db, group, definition, created_by=cli_actor(),
                                                   now=now)
        except CreateProblem as mistake:
            raise await problem(db, args, "lottery create", mistake.render(templates), args.channel,
                                args.group) from None
        await record(db, args, "lottery create", audit_store.OK,
                      f"created lottery {lottery.id} {lottery.title!r}, commitment {lottery.commitment}",
                      args.channel, args.group)
    print(f"lottery {lottery.id} created in {args.channel}/{args.group}")
    print(render_created(templates, lottery, prizes, tz))
    return 0


async def _list(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db, db.session() as session:
        rows = await store.list_lotteries(session, channel=args.channel, group=args.group)
    for lottery, group in rows:
        print(f"{lottery.id}\t{group.channel}/{group.external_id}\t{lottery.status}\t"
              f"{lottery.deadline.isoformat(timespec='minutes')}\t{lottery.entrant_count} entrants\t{lottery.title}")
    if not rows:
        print("(no lotteries)")
    return 0


async def _load(db: Database, lottery_id: int) -> store.Lottery:
    async with db.session() as session:
        lottery = await store.get_lottery(session, lottery_id)
    if lottery is None:
        raise UsageProblem(f"no lottery {lottery_id}")
    return lottery


async def _show(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        lottery = await _load(db, args.id)
        async with db.session() as session:
            ids = await store.entrants(session, lottery.id)  # type: ignore[arg-type]
            prizes = await store.prizes_of(session, lottery.id)  # type: ignore[arg-type]
            winners = await store.winners(session, lottery.id)  # type: ignore[arg-type]
            rounds = await store.rounds(session, lottery.id)  # type: ignore[arg-type]
    if args.entrants:
        for user in lottery_draw.canonical_entrants(ids):
            print(user)
        return 0
    drawn = lottery.status == store.DRAWN
    print(f"lottery {lottery.id}: {lottery.title} ({lottery.status})")
    print(f"deadline:      {lottery.deadline.isoformat(timespec='minutes')}")
    print(f"keyword:       {lottery.keyword}")
    print(f"conditions:    min days {lottery.min_days}, admins {'excluded' if lottery.exclude_admins else 'allowed'}")
    print("prizes:        " + ", ".join(f"{p.name} x{p.stock}" for p in prizes))
    print(f"entrants:      {lottery.entrant_count}")
    print(f"commitment:    {lottery.commitment}")
    # The seed stays secret until the draw: publishing it earlier would let anyone predict the winners.
    print(f"seed:          {lottery.seed if drawn else '(secret until the draw)'}")
    if drawn:
        print(f"entrants hash: {lottery.entrants_hash}")
        for w in winners:
            state = f"  FORFEITED ({w.forfeit_reason})" if w.forfeited else ""
            replaces = f"  replaces pick {w.replaces_pick}" if w.replaces_pick is not None else ""
            print(f"pick {w.pick}: {w.prize} #{w.slot + 1} -> {w.user} ({w.name}){replaces}{state}")
        for r in rounds:
            print(f"round {r.number}: {r.kind} picks {r.first_pick}..{r.first_pick + r.picks - 1} by {r.actor} "
                  f"at {r.at.isoformat(timespec='seconds')}{' (' + r.reason + ')' if r.reason else ''}")
    return 0


async def _draw(config: Config, args: argparse.Namespace) -> int:
    holder = f"{cli_actor()}:{secrets.token_hex(4)}"
    async with open_database(config) as db:
        lottery = await _load(db, args.id)
        group = await _group_of(db, lottery)
        claimed = await store.claim(db, lottery.id, holder=holder, lease_seconds=config.lottery.lease_seconds,  # type: ignore[arg-type]
                                    now=utcnow(), early=True)
        drawn = claimed is not None and await store.record_draw(db, lottery.id, holder=holder,  # type: ignore[arg-type]
                                                                actor=cli_actor(), now=utcnow())
        lottery = await _load(db, args.id)
        if not drawn:
            detail = f"lottery {lottery.id} is {lottery.status}: not drawn"
            raise await problem(db, args, "lottery draw", detail, group.channel, group.external_id)
        await record(db, args, "lottery draw", audit_store.OK,
                      f"drew lottery {lottery.id}: {lottery.entrant_count} entrants, seed {lottery.seed}",
                      group.channel, group.external_id)
    print(f"lottery {lottery.id} drawn: {lottery.entrant_count} entrants; the running bot announces it")
    return await _show(config, argparse.Namespace(id=args.id, entrants=False))


async def _redraw(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        lottery = await _load(db, args.id)
        group = await _group_of(db, lottery)
        try:
            async with db.session() as session:
                winner = await store.redraw_winner(session, lottery, prize_name=args.prize, who=args.winner,
                                                   actor=cli_actor(), reason=args.reason, now=utcnow())
        except store.LotteryError as exc:
            raise await problem(db, args, "lottery redraw", str(exc), group.channel, group.external_id) from None
        detail = f"lottery {lottery.id} {args.prize}: {args.winner} forfeited ({args.reason}), pick {winner.pick} -> {winner.user}"
        await record(db, args, "lottery redraw", audit_store.OK, detail, group.channel, group.external_id)
    print(detail)
    return 0


async def _cancel(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        lottery = await _load(db, args.id)
        group = await _group_of(db, lottery)
        async with db.session() as session:
            done = await store.cancel(session, lottery.id, None, utcnow())  # type: ignore[arg-type]
        if not done:
            detail = f"lottery {lottery.id} is {lottery.status}: only an open lottery can be cancelled"
            raise await problem(db, args, "lottery cancel", detail, group.channel, group.external_id)
        await record(db, args, "lottery cancel", audit_store.OK, f"cancelled lottery {lottery.id}", group.channel,
                      group.external_id)
    print(f"lottery {lottery.id} cancelled")
    return 0


async def _verify(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        lottery = await _load(db, args.id)
        async with db.session() as session:
            problems = await store.verify_stored(session, lottery)
            wins = await store.winners(session, lottery.id)  # type: ignore[arg-type]
    if problems:
        print(f"lottery {lottery.id}: MISMATCH")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"lottery {lottery.id}: OK — SHA-256(seed) equals the commitment {lottery.commitment}; the "
          f"{lottery.entrant_count} stored entrants hash to {lottery.entrants_hash}; all {len(wins)} picks "
          f"recomputed from the seed match the recorded winners")
    return 0


async def _group_of(db: Database, lottery: store.Lottery) -> group_store.Group:
    async with db.session() as session:
        group = await session.get(group_store.Group, lottery.group_id)
    assert group is not None
    return group

