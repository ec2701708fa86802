"""`qunbot faq`: import and export FAQ entries as CSV, list, add and remove them, read unanswered questions,
show or set a group's FAQ scope (which entries answer there).

Without --group a command works on the global entries (shown in every group); with --group on that
group's own ones, which add to the global entries and override one with the same question. Every change
is written to the audit log with the operator's OS user as the actor.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bot.cli import UsageProblem, open_database
from bot.cli.common import audit, cli_actor, problem
from bot.config import Config
from handlers.faq import (
    ADD,
    SCOPE_WORDS,
    UNCHANGED,
    UPDATE,
    apply_import,
    change_scope,
    find_entry,
    plan_import,
    scope_named,
)
from handlers.faq.index import question_key
from handlers.faq.transfer import CsvProblem, check_entry, read_csv, split_aliases, write_csv
from storage import admins as admin_store
from storage import faq as store
from storage import groups as group_store


def register(sub: argparse._SubParsersAction) -> None:
    faq = sub.add_parser("faq", help="FAQ entries: import/export CSV, list, add, remove; unanswered questions")
    faq_sub = faq.add_subparsers(dest="faq_command", required=True, metavar="FAQ_COMMAND")

    def scoped(name: str, text: str) -> argparse.ArgumentParser:
        p = faq_sub.add_parser(name, help=text)
        p.add_argument("--group", help="a group's own entries (its id on the channel); default: the global ones")
        p.add_argument("--channel", default="simulator", help="the channel the group is on (default: simulator)")
        return p

    p = scoped("import", "add or update entries from a CSV file (header question,answer[,aliases]; "
                         "aliases |-separated); an entry with the same question is updated, not duplicated")
    p.add_argument("file", metavar="FILE", help="the CSV file (UTF-8, with or without BOM), or - for stdin")
    p.add_argument("--dry-run", action="store_true", help="check the file and say what would change; write nothing")
    p.set_defaults(handler=_import)

    p = scoped("export", "write the entries as CSV (the format import reads)")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(handler=_export)

    p = scoped("list", "list the entries with their numbers")
    p.set_defaults(handler=_list)

    p = scoped("add", "add an entry (or update the one with the same question)")
    p.add_argument("--question", required=True)
    p.add_argument("--answer", required=True)
    p.add_argument("--aliases", default="", help="other ways to ask it, |-separated")
    p.set_defaults(handler=_add)

    p = scoped("remove", "remove an entry by number or question")
    p.add_argument("entry", metavar="ID_OR_QUESTION")
    p.set_defaults(handler=_remove)

    p = faq_sub.add_parser("scope", help="which entries answer in a group: all (its own and the global ones; "
                                         "also 'both'), group (its own only), global (the global ones only) or off; "
                                         "without SCOPE: show it")
    p.add_argument("--group", required=True, help="the group (its id on the channel)")
    p.add_argument("--channel", default="simulator", help="the channel the group is on (default: simulator)")
    p.add_argument("scope", nargs="?", type=str.lower, metavar="SCOPE", choices=CLI_SCOPE_WORDS,
                   help="all|both, group, global, off|none")
    p.set_defaults(handler=_scope)

    p = faq_sub.add_parser("unanswered", help="questions the bot could not answer, grouped, most asked first")
    p.add_argument("--group", help="only this group (its id on the channel)")
    p.add_argument("--channel", default="simulator", help="the channel the group is on (default: simulator)")
    p.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    p.set_defaults(handler=_unanswered)


async def _group_id(session, args: argparse.Namespace, *, create: bool) -> int | None:  # noqa: ANN001
    """The scope's group id (None: global); a group the bot has never seen is created only to add to it."""
    if not args.group:
        return None
    if create:
        return (await group_store.ensure_group(session, args.channel, args.group)).id
    group = await admin_store.find_group(session, args.channel, args.group)
    if group is None:
        raise UsageProblem(f"no group {args.group!r} on channel {args.channel!r} is known to the bot")
    return group.id


# The English words of handlers.faq.SCOPE_WORDS (the chat command also takes the Chinese ones).
CLI_SCOPE_WORDS = [word for word in SCOPE_WORDS if word.isascii()]
SCOPE_MEANING = {store.SCOPE_ALL: "the group's own entries and the global ones",
                 store.SCOPE_GROUP: "the group's own entries only", store.SCOPE_GLOBAL: "the global entries only",
                 store.SCOPE_OFF: "no FAQ answers in this group"}


def _where(args: argparse.Namespace) -> str:
    return f"group {args.channel}/{args.group}" if args.group else "global entries"


def _place(args: argparse.Namespace) -> dict[str, str]:
    """The audit entry's channel and group: the group's, or none for the global entries."""
    return {"channel": args.channel if args.group else "", "group": args.group or ""}


async def _import(config: Config, args: argparse.Namespace) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else await asyncio.to_thread(Path(args.file).read_bytes)
    except OSError as exc:
        raise UsageProblem(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        rows = read_csv(data)
    except CsvProblem as exc:
        raise UsageProblem(f"{args.file}: nothing imported:\n{exc}") from None
    async with open_database(config) as db:
        async with db.session() as session:
            if args.dry_run:
                # A group the bot has never seen has no entries yet: everything would be added.
                known = await admin_store.find_group(session, args.channel, args.group) if args.group else None
                if args.group and known is None:
                    counts = {ADD: len(rows), UPDATE: 0, UNCHANGED: 0}
                else:
                    steps = await plan_import(session, known.id if known else None, rows)
                    counts = {action: sum(s.action == action for s in steps) for action in (ADD, UPDATE, UNCHANGED)}
            else:
                counts = await apply_import(session, await _group_id(session, args, create=True), rows,
                                            by=cli_actor())
            summary = (f"{counts[ADD]} added, {counts[UPDATE]} updated, {counts[UNCHANGED]} unchanged "
                       f"({_where(args)})")
            if args.dry_run:
                print(f"dry run, nothing written: would be {summary}")
                return 0
            await audit(session, "faq import", args=args.file, detail=summary, **_place(args))
    print(summary)
    return 0


async def _export(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        async with db.session() as session:
            group_id = await _group_id(session, args, create=False)
            rows = await store.entries_in_scope(session, group_id)
    text = write_csv((r.question, r.answer, r.alias_list) for r in rows)
    if args.output:
        await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
        print(f"{len(rows)} entries written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


async def _list(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        async with db.session() as session:
            group_id = await _group_id(session, args, create=False)
            rows = await store.entries_in_scope(session, group_id)
    for row in rows:
        aliases = f"\t({' | '.join(row.alias_list)})" if row.alias_list else ""
        print(f"#{row.id}\t{row.question}{aliases}")
    if not rows:
        print(f"(no entries: {_where(args)})")
    return 0


async def _add(config: Config, args: argparse.Namespace) -> int:
    question, answer = args.question.strip(), args.answer.strip()
    aliases = split_aliases(args.aliases)
    problem = check_entry(question, answer, aliases)
    if problem:
        raise UsageProblem(problem)
    async with open_database(config) as db:
        async with db.session() as session:
            group_id = await _group_id(session, args, create=True)
            saved = await store.save_entry(session, group_id=group_id, question=question,
                                           question_key=question_key(question), answer=answer, aliases=aliases,
                                           by=cli_actor())
            what = "added" if saved.created else "updated" if saved.changed else "unchanged"
            detail = f"{what} #{saved.entry.id} {question} ({_where(args)})"
            await audit(session, "faq add", args=question, detail=detail, **_place(args))
    print(detail)
    return 0


async def _remove(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        async with db.session() as session:
            group_id = await _group_id(session, args, create=False)
            entry = await find_entry(session, group_id, args.entry)
            if entry is None or entry.group_id != group_id:
                raise UsageProblem(f"no entry {args.entry!r} among the {_where(args)}; see `qunbot faq list`")
            await store.remove_entry(session, entry)
            detail = f"removed #{entry.id} {entry.question} ({_where(args)})"
            await audit(session, "faq remove", args=args.entry, detail=detail, **_place(args))
    print(detail)
    return 0


async def _scope(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        try:
            async with db.read_session() as session:
                group_id = await _group_id(session, args, create=False)
        except UsageProblem as exc:
            raise await problem(db, args, "faq scope", str(exc), args.channel, args.group) from None
        assert group_id is not None
        if args.scope is None:
            async with db.read_session() as session:
                current = await store.group_scope(session, group_id)
            print(f"faq scope of {_where(args)}: {current} ({SCOPE_MEANING[current]})")
            return 0
        scope = scope_named(args.scope)
        assert scope is not None  # argparse checked the word
        async with db.session() as session:
            old, changed = await change_scope(session, group_id, scope)
            await audit(session, "faq scope", args=args.scope, detail=changed or f"faq scope {scope} (unchanged)",
                        **_place(args))
    if changed is None:
        print(f"faq scope of {_where(args)} is {scope} already ({SCOPE_MEANING[scope]})")
    else:
        print(f"faq scope of {_where(args)}: {old} -> {scope} ({SCOPE_MEANING[scope]})")
    return 0


async def _unanswered(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        async with db.session() as session:
            group_id = await _group_id(session, args, create=False)
            rows = await store.unanswered(session, group_id=group_id, limit=args.limit)
    if not rows:
        print("(no unanswered questions)")
    for row in rows:
        group = f"{row.channel}/{row.group}" + (f" {row.group_name}" if row.group_name else "")
        print(f"{row.count}\t{row.last_seen:%Y-%m-%d %H:%M}\t{group}\t{row.sample}\t[{row.cluster_key}]")
    return 0
