"""The `qunbot` command: run the bot, migrate the database, check the configuration, and each feature's
own sub-commands (one module per feature in this package, each with a `register(subparsers)` function).

A feature's sub-command sets `handler=` (an async function taking the config and the parsed arguments and
returning the exit code) with `parser.set_defaults`; it gets a migrated database through `open_database`.
Audit entries and audited mistakes go through bot/cli/common.py (`record`, `problem`, `audit`, `cli_actor`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from bot.config import Config, ConfigError, apply_overrides, load_config, redacted
from bot.logs import setup_logging

if TYPE_CHECKING:
    from storage.db import Database

log = logging.getLogger("qunbot.cli")

# Feature modules in this package that add sub-commands (each has `register(subparsers)`).
FEATURE_COMMANDS: list[str] = ["admin", "points", "lottery", "faq", "push", "campaign", "console"]


class UsageProblem(Exception):
    """A command-line mistake a feature detected: printed as `qunbot: ...` with exit status 2."""


@asynccontextmanager
async def open_database(config: Config) -> AsyncIterator[Database]:
    """The configured database, migrated first where the config says so (the embedded SQLite)."""
    from storage.db import Database
    from storage.migrate import upgrade

    if config.auto_migrate:
        await upgrade(config.database.url)
    db = Database(config.database.url)
    try:
        yield db
    finally:
        await db.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qunbot", description="qunbot: a community-group bot for WeCom and WeChat")
    parser.add_argument("-c", "--config", help="config file (TOML); default: $QUNBOT_CONFIG or built-in defaults")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                        help="override log.level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the bot (web server, channels, background workers)")
    run.add_argument("--host", help="override server.host")
    run.add_argument("--port", type=int, help="override server.port")
    run.add_argument("--processes", type=int, help="override server.processes (0 = one per CPU)")
    run.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a child of the supervisor

    db = sub.add_parser("db", help="database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_sub.add_parser("upgrade", help="apply database migrations up to the latest")

    welcome = sub.add_parser("welcome", help="a group's welcome message: show, set the text or rules, switch on/off")
    welcome_sub = welcome.add_subparsers(dest="welcome_command", required=True, metavar="WELCOME_COMMAND")
    for name, text in (("show", "print the group's welcome settings and a preview"),
                       ("set", "set the group's welcome text and/or rules (\"\" resets to the default)"),
                       ("on", "switch welcomes on for the group"), ("off", "switch welcomes off for the group")):
        p = welcome_sub.add_parser(name, help=text)
        p.add_argument("--group", required=True, help="the group id on its channel (e.g. g1, or a WeCom chat id)")
        p.add_argument("--channel", default="simulator", help="the channel the group is on (default: simulator)")
        if name == "set":
            p.add_argument("--text", help="template with {names} {group_name} {member_count} {rules} {count}")
            p.add_argument("--rules", help="the group rules shown in the welcome")

    cfg = sub.add_parser("config", help="configuration commands")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="CONFIG_COMMAND")
    check = cfg_sub.add_parser("check", help="validate the configuration and print it (secrets masked)")
    check.add_argument("--quiet", action="store_true", help="print nothing when the configuration is valid")

    import importlib

    for name in FEATURE_COMMANDS:
        importlib.import_module(f"bot.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        apply_overrides(config, **{
            "log.level": (args.log_level, "--log-level"),
            "server.host": (getattr(args, "host", None), "--host"),
            "server.port": (getattr(args, "port", None), "--port"),
            "server.processes": (getattr(args, "processes", None), "--processes"),
        })
    except ConfigError as exc:
        print(f"qunbot: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log.level, config.log.format)

    if args.command == "config":
        if not args.quiet:
            print(json.dumps(redacted(config), ensure_ascii=False, indent=2))
        return 0
    if args.command == "db":
        return asyncio.run(_db_upgrade(config))
    if args.command == "run":
        from bot.supervisor import process_count, supervise

        if process_count(config) > 1 and not args.reuse_port:
            return supervise(config, args.config)
        return _run(config, reuse_port=args.reuse_port)
    if args.command == "welcome":
        return asyncio.run(_welcome(config, args))
    handler = getattr(args, "handler", None)
    if handler is None:
        return 2
    try:
        return asyncio.run(handler(config, args))
    except UsageProblem as exc:
        print(f"qunbot: {exc}", file=sys.stderr)
        return 2


async def _db_upgrade(config: Config) -> int:
    from storage.migrate import upgrade

    await upgrade(config.database.url)
    log.info("database upgraded", extra={"database": config.database.url.split("@")[-1]})
    return 0


async def _welcome(config: Config, args: argparse.Namespace) -> int:
    from handlers.welcome import preview_welcome, update_welcome_settings

    async with open_database(config) as db:
        if args.welcome_command == "set" and args.text is None and args.rules is None:
            print("qunbot: welcome set needs --text and/or --rules", file=sys.stderr)
            return 2
        changes: dict[str, object] = {}
        if args.welcome_command in ("on", "off"):
            changes["enabled"] = args.welcome_command == "on"
        if args.welcome_command == "set":
            for key in ("text", "rules"):
                value = getattr(args, key)
                if value is not None:
                    changes["template" if key == "text" else key] = value or None
        try:
            if changes:
                await update_welcome_settings(db, args.channel, args.group, **changes)
                await _audit_welcome(db, args)
            print(await preview_welcome(db, config, args.channel, args.group))
        except ValueError as exc:
            print(f"qunbot: {exc}", file=sys.stderr)
            return 2
        return 0


async def _audit_welcome(db: Database, args: argparse.Namespace) -> None:
    """Welcome changes from the CLI go to the audit log like the console's (source cli, your OS user)."""
    import getpass

    from storage import audit

    shown = " ".join(f"--{key} {getattr(args, key)!r}" for key in ("text", "rules")
                     if getattr(args, key, None) is not None)
    async with db.session() as session:
        await audit.record(session, source="cli", channel=args.channel, group=args.group, actor=getpass.getuser(),
                           command=f"welcome {args.welcome_command}", args=shown, result=audit.OK)


def _run(config: Config, *, reuse_port: bool = False) -> int:
    from aiohttp import web

    # Database drivers hand results back from threads (aiosqlite) and the loop holds the GIL while busy:
    # a 5 ms switch interval would add up to 5 ms to every hop, so hand over sooner.
    sys.setswitchinterval(0.0005)

    from bot.app import create_app, freeze_after_startup

    app = create_app(config)
    freeze_after_startup(app)
    if reuse_port:
        from bot.supervisor import watch_parent

        watch_parent(app)
    where = f"http://{config.server.host}:{config.server.port}"
    if config.simulator.enabled and not reuse_port:
        print(f"qunbot is running: open {where}/simulator for the simulated group chat", file=sys.stderr)
    web.run_app(app, host=config.server.host, port=config.server.port, print=None, access_log=None,
                shutdown_timeout=config.server.shutdown_timeout_seconds, reuse_port=reuse_port or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
