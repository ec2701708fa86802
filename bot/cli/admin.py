"""`qunbot admin` (a group's admins the bot keeps) and `qunbot audit` (the audit log)."""

from __future__ import annotations

import argparse
import getpass

from bot.cli import UsageProblem, open_database
from bot.config import Config
from storage import admins as admin_store
from storage import audit as audit_store
from storage import groups as group_store


def register(sub: argparse._SubParsersAction) -> None:
    admin = sub.add_parser("admin", help="a group's admins: list, add or remove the ones the bot keeps")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="ADMIN_COMMAND")
    for name, text in (("list", "list the group's admins (platform-reported and added)"),
                       ("add", "make members admins of the group"), ("remove", "remove admins added earlier")):
        p = admin_sub.add_parser(name, help=text)
        p.add_argument("--group", required=True, help="the group id on its channel (e.g. g1, or a WeCom chat id)")
        p.add_argument("--channel", default="simulator", help="the channel the group is on (default: simulator)")
        if name != "list":
            p.add_argument("users", nargs="+", metavar="USER", help="platform user id(s)")
        p.set_defaults(handler=_admin)

    audit = sub.add_parser("audit", help="show the audit log of admin actions (chat, CLI, console), newest first")
    audit.add_argument("--group", help="only this group (its id on the channel)")
    audit.add_argument("--channel", help="only this channel")
    audit.add_argument("--limit", type=int, default=50, help="how many entries (default 50)")
    audit.set_defaults(handler=_audit)


async def _admin(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        async with db.session() as session:
            group = await admin_store.find_group(session, args.channel, args.group)
            if group is None and args.admin_command != "add":
                raise UsageProblem(f"no group {args.group!r} on channel {args.channel!r} is known to the bot")
            if args.admin_command == "list":
                rows = await admin_store.list_admins(session, group.id)  # type: ignore[union-attr,arg-type]
                for member, row in rows:
                    role = row.detail if row.source == admin_store.PLATFORM else f"added by {row.detail or '?'}"
                    print(f"{member.external_id}\t{member.name}\t{row.source}\t{role}")
                if not rows:
                    print("(no admins known for this group)")
                return 0
            if group is None:
                group = await group_store.ensure_group(session, args.channel, args.group)
            actor = getpass.getuser()
            done = []
            for user in args.users:
                member = await group_store.ensure_member(session, args.channel, user)
                if args.admin_command == "add":
                    changed = await admin_store.add_admin(session, group.id, member.id,  # type: ignore[arg-type]
                                                          detail=f"cli:{actor}")
                else:
                    changed = await admin_store.remove_admin(session, group.id, member.id)  # type: ignore[arg-type]
                done.append(f"{user}: {'done' if changed else 'unchanged'}")
            await audit_store.record(session, source="cli", channel=args.channel, group=args.group, actor=actor,
                                     command=f"admin {args.admin_command}", args=" ".join(args.users),
                                     result=audit_store.OK, detail="; ".join(done))
        print("\n".join(done))
        return 0


async def _audit(config: Config, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageProblem("--limit must be at least 1")
    async with open_database(config) as db, db.session() as session:
        entries = await audit_store.recent(session, group=args.group, channel=args.channel, limit=args.limit)
    for e in entries:
        where = f"{e.channel}:{e.group}" if e.group else (e.channel or "-")
        print(f"{e.at.isoformat(timespec='seconds')}\t{e.source}\t{where}\t{e.actor}\t{e.command} {e.args}".rstrip()
              + f"\t{e.result}\t{e.detail}")
    if not entries:
        print("(the audit log is empty)")
    return 0
