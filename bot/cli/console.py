"""`qunbot console`: accounts of the ops console (create, change password or role, list, disable, groups).

Passwords are never command-line arguments (they would show in `ps` and shell history): they are asked
for twice at a terminal, or read from the first line of standard input (`--password-stdin`, also the
default when stdin is not a terminal), or taken from an environment variable you name (`--password-env`).
Every change is written to the audit log (source cli, actor = your OS user), without the password.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from bot.cli import UsageProblem, open_database
from bot.cli.common import audit
from bot.config import Config
from storage import console as store
from storage import groups as group_store


def register(sub: argparse._SubParsersAction) -> None:
    console = sub.add_parser("console", help="ops console accounts: create-user, set-password, list-users …")
    console_sub = console.add_subparsers(dest="console_command", required=True, metavar="CONSOLE_COMMAND")

    def password_options(p: argparse.ArgumentParser) -> None:
        how = p.add_mutually_exclusive_group()
        how.add_argument("--password-stdin", action="store_true",
                         help="read the password from the first line of standard input")
        how.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")

    def group_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--group", action="append", default=[], metavar="CHANNEL:ID",
                       help="a group a group_admin may see and manage (repeatable), e.g. simulator:g1, wecom:wrXXXX")
        p.add_argument("--create-groups", action="store_true",
                       help="accept groups the bot has not seen yet (otherwise a typo is refused)")

    # No abbreviated options: "--password SECRET" must fail, not match --password-stdin.
    create = console_sub.add_parser("create-user", help="create a console account (the password is asked for)",
                                    allow_abbrev=False)
    create.add_argument("name", help="login name (case-insensitive)")
    create.add_argument("--role", required=True, choices=store.ROLES,
                        help="ops_admin: everything; ops_viewer: read only; group_admin: only the --group groups")
    group_option(create)
    password_options(create)
    create.set_defaults(handler=_create_user)

    setpw = console_sub.add_parser("set-password", help="set a console account's password (logs it out everywhere)",
                                   allow_abbrev=False)
    setpw.add_argument("name")
    password_options(setpw)
    setpw.set_defaults(handler=_set_password)

    groups = console_sub.add_parser("set-groups", help="replace the groups of a group_admin account")
    groups.add_argument("name")
    group_option(groups)
    groups.set_defaults(handler=_set_groups)

    role = console_sub.add_parser("set-role", help="give a console account another role (the last active "
                                                   "ops_admin keeps theirs)")
    role.add_argument("name")
    role.add_argument("--role", required=True, choices=store.ROLES)
    group_option(role)
    role.set_defaults(handler=_set_role)

    listing = console_sub.add_parser("list-users", help="list console accounts with role, groups and last login")
    listing.set_defaults(handler=_list_users)

    for name, text in (("disable-user", "disable an account (and end its sessions)"),
                       ("enable-user", "enable a disabled account again")):
        p = console_sub.add_parser(name, help=text)
        p.add_argument("name")
        p.set_defaults(handler=_set_disabled)


def read_password(args: argparse.Namespace, config: Config) -> str:
    """The new password from the environment variable, stdin, or a prompt (twice); checked for length."""
    from bot.console.auth import password_problem

    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise UsageProblem(f"environment variable {args.password_env} is not set")
    elif args.password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise UsageProblem("the passwords do not match")
    problem = password_problem(password, config.console)
    if problem:
        raise UsageProblem(problem)
    return password


async def _hash(password: str) -> str:
    from bot.console.auth import hash_password

    return await asyncio.to_thread(hash_password, password)


async def _group_ids(session, specs: list[str], create: bool) -> list[int]:  # noqa: ANN001 - AsyncSession
    ids = []
    for spec in specs:
        channel, sep, external_id = spec.partition(":")
        if not sep or not channel or not external_id:
            raise UsageProblem(f"--group {spec!r}: write it as CHANNEL:ID, e.g. simulator:g1")
        group = await group_store.ensure_group(session, channel, external_id) if create else None
        if group is None:
            from storage.admins import find_group

            group = await find_group(session, channel, external_id)
        if group is None:
            raise UsageProblem(f"--group {spec!r}: the bot has not seen group {external_id!r} on channel "
                               f"{channel!r}; check the id, or pass --create-groups")
        ids.append(group.id)
    return ids


def _check(role: str, groups: list[str]) -> None:
    """The role and --group options agree (checked before a password is asked for)."""
    try:
        store.check_access(role, len(groups))
    except store.AccountProblem as exc:
        raise UsageProblem(str(exc)) from None


async def _user(session, name: str) -> store.ConsoleUser:  # noqa: ANN001 - AsyncSession
    user = await store.find_user(session, name)
    if user is None:
        raise UsageProblem(f"no console user {name!r}")
    return user


async def _create_user(config: Config, args: argparse.Namespace) -> int:
    _check(args.role, args.group)
    try:
        name = store.check_username(args.name)
    except store.AccountProblem as exc:
        raise UsageProblem(str(exc)) from None
    async with open_database(config) as db:
        async with db.read_session() as session:
            if await store.find_user(session, name) is not None:
                raise UsageProblem(f"a console user {name!r} exists already (use set-password to change it)")
        password_hash = await _hash(read_password(args, config))
        async with db.session() as session:
            ids = await _group_ids(session, args.group, args.create_groups)
            try:
                await store.add_user(session, username=name, password_hash=password_hash, role=args.role,
                                     group_ids=ids)
            except store.AccountProblem as exc:
                raise UsageProblem(str(exc)) from None
            await audit(session, "console create-user", args=f"{name} role={args.role}"
                        + (f" groups={','.join(args.group)}" if args.group else ""))
    print(f"created console user {name} ({args.role}); log in at /console")
    return 0


async def _set_password(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db:
        async with db.read_session() as session:
            user = await _user(session, args.name)
        password_hash = await _hash(read_password(args, config))
        async with db.session() as session:
            await store.set_password(session, user.id, password_hash)  # type: ignore[arg-type]
            await audit(session, "console set-password", args=user.username, detail="sessions ended")
    print(f"password of {user.username} changed; its sessions have ended")
    return 0


async def _set_groups(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db, db.session() as session:
        user = await _user(session, args.name)
        try:
            await store.change_groups(session, user.id, await _group_ids(session, args.group, args.create_groups))  # type: ignore[arg-type]
        except store.AccountProblem as exc:
            raise UsageProblem(str(exc)) from None
        await audit(session, "console set-groups", args=f"{user.username} groups={','.join(args.group)}")
    print(f"groups of {user.username}: {', '.join(args.group)}")
    return 0


async def _set_role(config: Config, args: argparse.Namespace) -> int:
    _check(args.role, args.group)
    async with open_database(config) as db, db.session() as session:
        user = await _user(session, args.name)
        try:
            old = await store.change_role(session, user.id, args.role,  # type: ignore[arg-type]
                                          await _group_ids(session, args.group, args.create_groups))
        except store.AccountProblem as exc:
            raise UsageProblem(str(exc)) from None
        await audit(session, "console set-role", args=f"{user.username} role={args.role}"
                    + (f" groups={','.join(args.group)}" if args.group else ""), detail=f"role {old} -> {args.role}")
    print(f"{user.username}: {old} -> {args.role}" + (f" ({', '.join(args.group)})" if args.group else ""))
    return 0


async def _set_disabled(config: Config, args: argparse.Namespace) -> int:
    disable = args.console_command == "disable-user"
    async with open_database(config) as db, db.session() as session:
        user = await _user(session, args.name)
        try:
            await store.change_disabled(session, user.id, disable)  # type: ignore[arg-type]
        except store.AccountProblem as exc:
            raise UsageProblem(str(exc)) from None
        await audit(session, f"console {args.console_command}", args=user.username,
                    detail="sessions ended" if disable else "")
    print(f"{user.username} {'disabled; its sessions have ended' if disable else 'enabled'}")
    return 0


async def _list_users(config: Config, args: argparse.Namespace) -> int:
    async with open_database(config) as db, db.read_session() as session:
        rows = await store.list_users(session)
    for user, groups in rows:
        last = user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "never"
        where = ",".join(f"{g.channel}:{g.external_id}" for g in groups) or "-"
        state = "disabled" if user.disabled else "active"
        print(f"{user.username}\t{user.role}\t{state}\t{where}\tlast login {last}")
    if not rows:
        print("(no console users; create one with: qunbot console create-user NAME --role ops_admin)")
    return 0
