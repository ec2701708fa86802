"""The `qunbot` command: run the bot, migrate the database, check the configuration."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from bot.config import Config, ConfigError, apply_overrides, load_config, redacted
from bot.logs import setup_logging

log = logging.getLogger("qunbot.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qunbot", description="qunbot: a community-group bot for WeCom and WeChat")
    parser.add_argument("-c", "--config", help="config file (TOML); default: $QUNBOT_CONFIG or built-in defaults")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                        help="override log.level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the bot (web server, channels, background workers)")
    run.add_argument("--host", help="override server.host")
    run.add_argument("--port", type=int, help="override server.port")

    db = sub.add_parser("db", help="database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_sub.add_parser("upgrade", help="apply database migrations up to the latest")

    cfg = sub.add_parser("config", help="configuration commands")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="CONFIG_COMMAND")
    check = cfg_sub.add_parser("check", help="validate the configuration and print it (secrets masked)")
    check.add_argument("--quiet", action="store_true", help="print nothing when the configuration is valid")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        apply_overrides(config, **{
            "log.level": (args.log_level, "--log-level"),
            "server.host": (getattr(args, "host", None), "--host"),
            "server.port": (getattr(args, "port", None), "--port"),
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
        return _run(config)
    return 2


async def _db_upgrade(config: Config) -> int:
    from storage.migrate import upgrade

    await upgrade(config.database.url)
    log.info("database upgraded", extra={"database": config.database.url.split("@")[-1]})
    return 0


def _run(config: Config) -> int:
    from aiohttp import web

    # Database drivers hand results back from threads (aiosqlite) and the loop holds the GIL while busy:
    # a 5 ms switch interval would add up to 5 ms to every hop, so hand over sooner.
    sys.setswitchinterval(0.0005)

    from bot.app import create_app

    app = create_app(config)
    where = f"http://{config.server.host}:{config.server.port}"
    if config.simulator.enabled:
        print(f"qunbot is running: open {where}/simulator for the simulated group chat", file=sys.stderr)
    web.run_app(app, host=config.server.host, port=config.server.port, print=None,
                access_log=None, shutdown_timeout=config.server.shutdown_timeout_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
