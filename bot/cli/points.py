"""`qunbot points`: a member's points card and ledger, grants and deductions, a group's leaderboard.

Grants and deductions from the command line follow the same rules as 加分 / 扣分 in chat (a reason is
required; checkin.allow_negative_balance decides whether a deduction may go below zero) and are written to
the audit log with source "cli" and the operating-system user as the actor.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli import UsageProblem, open_database
from bot.config import Config
from storage import admins as admin_store
from storage import audit as audit_store
from storage import checkin as checkin_store
from storage import groups as group_store
from storage import points as points_store
from storage.db import utcnow
from storage.groups import Group, Member

BOARDS = (checkin_store.BY_POINTS, checkin_store.BY_STREAK, checkin_store.BY_CHECKINS)


def register(sub: argparse._SubParsersAction) -> None:
    points = sub.add_parser("points", help="points: a member's card and ledger, grant or deduct, leaderboard")
    points_sub = points.add_subparsers(dest="points_command", required=True, metavar="POINTS_COMMAND")
    specs = (("show", "a member's balance, level, streak and check-ins this month"),
             ("ledger", "a member's ledger rows, newest first"),
             ("grant", "give a member points (with --reason)"),
             ("deduct", "take points from a member (with --reason)"),
             ("rank", "the group's leaderboard"))
    for name, text in specs:
        p = points_sub.add_parser(name, help=text)
        p.add_argument("--group", required=True, help="the group id on its channel (e.g. g1, or a WeCom chat id)")
        p.add_argument("--channel", default="simulator", help="the channel the group is on (default: simulator)")
        if name != "rank":
            p.add_argument("user", metavar="USER", help="the member's platform user id (or name in the group)")
        if name in ("grant", "deduct"):
            p.add_argument("amount", type=int, metavar="AMOUNT", help="points, a positive whole number")
            p.add_argument("--reason", required=True, help="why (kept in the ledger and the audit log)")
        if name in ("ledger", "rank"):
            p.add_argument("--limit", type=int, default=20 if name == "ledger" else 10, help="how many rows")
        if name == "rank":
            p.add_argument("--by", choices=BOARDS, default=checkin_store.BY_POINTS,
                           help="points (balance), streak (current), checkins (this month); default points")
        p.set_defaults(handler=_points)


async def _points(config: Config, args: argparse.Namespace) -> int:
    from handlers.checkin import MAX_ADJUSTMENT, member_card

    if getattr(args, "limit", 1) < 1:
        raise UsageProblem("--limit must be at least 1")
    if args.points_command in ("grant", "deduct"):
        if not 1 <= args.amount <= MAX_ADJUSTMENT:
            raise UsageProblem(f"AMOUNT must be between 1 and {MAX_ADJUSTMENT}")
        if not args.reason.strip():
            raise UsageProblem("--reason must say why")
    async with open_database(config) as db, db.session() as session:
        group = await admin_store.find_group(session, args.channel, args.group)
        if group is None:
            raise UsageProblem(f"no group {args.group!r} on channel {args.channel!r} is known to the bot")
        today = utcnow().astimezone(ZoneInfo(group.timezone or config.timezone)).date()
        if args.points_command == "rank":
            top, _ = await checkin_store.leaderboard(session, group.id, by=args.by, today=today,  # type: ignore[arg-type]
                                                     limit=args.limit)
            for s in top:
                print(f"{s.rank}\t{s.name}\t{s.score}")
            if not top:
                print("(nobody on this board yet)")
            return 0
        member = await group_store.find_member_in_group(session, group, args.user)
        if member is None:
            raise UsageProblem(f"no member {args.user!r} in group {args.group!r}")
        if args.points_command == "show":
            card = await member_card(session, config.checkin, group, member.id, today)  # type: ignore[arg-type]
            level = card.level
            upto = f" (next: {level.next_name} at {level.next_threshold})" if level.next_name else " (top level)"
            print(f"member\t{member.external_id}\t{member.name}\n"
                  f"balance\t{card.totals.balance}\nearned\t{card.totals.earned}\nlevel\t{level.name}{upto}\n"
                  f"streak\t{card.streak}\nmonth\t{card.month_checkins}\n"
                  f"today\t{'checked in' if card.checked_in_today else 'not yet'} ({today.isoformat()})")
            return 0
        if args.points_command == "ledger":
            rows = await points_store.history(session, group.id, member.id, limit=args.limit)  # type: ignore[arg-type]
            for r in rows:
                print(f"{r.at.isoformat(timespec='seconds')}\t{r.delta:+d}\t{r.kind}\t{r.reason}")
            if not rows:
                print("(no ledger rows)")
            return 0
        return await _adjust(session, config, args, group, member)


async def _adjust(session: AsyncSession, config: Config, args: argparse.Namespace, group: Group,
                  member: Member) -> int:
    """Grant or deduct, audited whether it was done or refused."""
    actor = getpass.getuser()
    sign = 1 if args.points_command == "grant" else -1
    reason = args.reason.strip()[:255]
    record = {"source": "cli", "channel": args.channel, "group": args.group, "actor": actor,
              "command": f"points {args.points_command}", "args": f"{args.user} {args.amount} --reason {reason}"}
    try:
        done = await points_store.adjust(session, group_id=group.id, member_id=member.id, delta=sign * args.amount,
                                         reason=reason, allow_negative=config.checkin.allow_negative_balance)
    except points_store.InsufficientPoints as exc:
        detail = f"refused: balance {exc.balance} is less than {args.amount}"
        await audit_store.record(session, **record, result=audit_store.REFUSED, detail=detail)
        # Not raised: the transaction must commit to keep the audit entry (the refusal changed nothing else).
        print(f"qunbot: {member.external_id} has {exc.balance} points; cannot deduct {args.amount} "
              "(checkin.allow_negative_balance is false)", file=sys.stderr)
        return 2
    detail = f"{sign * args.amount:+d} to {member.external_id} ({reason}); balance {done.balance}"
    await audit_store.record(session, **record, result=audit_store.OK, detail=detail)
    print(f"{member.external_id}\t{sign * args.amount:+d}\tbalance {done.balance}")
    return 0
