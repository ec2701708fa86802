"""`qunbot run` with `server.processes` > 1: several bot processes serving one port.

Python runs one event loop on one core; on a machine with more, the bot scales the way it already behaves
across machines: every process is a whole bot on the same database (state lives there; duplicates stop at
the inbox; timers and fan-outs are leased), and the kernel spreads incoming connections over them
(SO_REUSEPORT). This module is only the parent: it migrates once, starts the children, restarts one that
dies (after a pause that grows while it keeps dying), and passes SIGINT/SIGTERM on for a graceful stop.
A child that exits with an error right after starting (a port in use, a database that refuses it) stops the
whole group with its exit status instead of being restarted forever; one killed by a signal is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from bot.config import Config

log = logging.getLogger("qunbot.supervisor")

# A child that exits within this many seconds of starting failed to start.
STARTUP_SECONDS = 5.0
RESTART_PAUSE_MAX = 30.0
# Tells a child which process supervises it.
PARENT_ENV = "QUNBOT_SUPERVISOR_PID"


def process_count(config: Config) -> int:
    """server.processes, 0 meaning one per CPU."""
    return config.server.processes or os.cpu_count() or 1


@dataclass
class Child:
    slot: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    pause: float = 1.0


def child_argv(config_path: str | None, config: Config) -> list[str]:
    argv = [sys.executable, "-m", "bot"]
    if config_path:
        argv += ["--config", config_path]
    return argv + ["--log-level", config.log.level, "run", "--host", config.server.host,
                   "--port", str(config.server.port), "--processes", "1", "--reuse-port"]


def port_taken(host: str, port: int) -> str | None:
    """Why the port cannot be ours, or None. Checked before the children share it with SO_REUSEPORT, which
    would otherwise let them join another qunbot already serving it (same user) and split its traffic."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return str(exc)
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc.strerror or str(exc)
    return None


def child_env(config: Config, count: int) -> dict[str, str]:
    """The environment of each of `count` children."""
    return {
        **os.environ,
        # The parent migrated: children must not race each other doing it again.
        "QUNBOT_DATABASE_AUTO_MIGRATE": "false",
        # A burst is the bot's, not one process's: each child sees 1/count of the waiting callbacks, so each holds
        # processing back at 1/count of them. (Two processes at 16 connections never reached 8 each, and let
        # processing run at full speed through the burst: 4,500-4,900 acknowledgements a second instead of 6,600.)
        "QUNBOT_INBOX_BUSY_ACCEPTS": str(math.ceil(config.inbox.busy_accepts / count)),
    }


def supervise(config: Config, config_path: str | None) -> int:
    """Run `process_count(config)` bot processes until SIGINT/SIGTERM; the exit status."""
    taken = port_taken(config.server.host, config.server.port)
    if taken:
        print(f"qunbot: cannot listen on {config.server.host}:{config.server.port} (server.host, server.port): "
              f"{taken}", file=sys.stderr)
        return 1
    if config.auto_migrate:
        from storage.migrate import upgrade

        asyncio.run(upgrade(config.database.url))
    count = process_count(config)
    argv = child_argv(config_path, config)
    env = child_env(config, count)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    children = [Child(slot, _spawn(argv, env)) for slot in range(count)]
    log.info("bot processes started", extra={"processes": count, "pids": [c.proc.pid for c in children],
                                              "port": config.server.port})
    if config.simulator.enabled:
        where = f"http://{config.server.host}:{config.server.port}"
        print(f"qunbot is running ({count} processes): open {where}/simulator for the simulated group chat",
              file=sys.stderr)
    status = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for child in children:
                code = child.proc.poll()
                if code is None or stopping:
                    continue
                # An error exit (not a signal) right after starting: restarting would only fail again.
                if time.monotonic() - child.started < STARTUP_SECONDS and code > 0:
                    log.error("a bot process failed to start; stopping all",
                              extra={"pid": child.proc.pid, "exit_status": code})
                    status, stopping = code, True
                    break
                log.error("a bot process exited; starting another",
                          extra={"pid": child.proc.pid, "exit_status": code, "pause_seconds": child.pause})
                resume_at = time.monotonic() + child.pause
                while not stopping and time.monotonic() < resume_at:
                    time.sleep(0.1)
                if stopping:
                    break
                # The pause grows while processes keep dying soon after starting; one that ran a while resets it.
                lived = time.monotonic() - child.started
                pause = min(child.pause * 2, RESTART_PAUSE_MAX) if lived < 60 else 1.0
                children[children.index(child)] = Child(child.slot, _spawn(argv, env), pause=pause)
    finally:
        _stop_all(children, config.server.shutdown_timeout_seconds + 5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("bot processes stopped", extra={"exit_status": status})
    return status


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Its own session: a Ctrl-C in the terminal reaches the supervisor alone, which passes one SIGTERM on (a
    # second signal would cut a child's graceful stop short). A child whose supervisor is gone stops itself.
    return subprocess.Popen(argv, env={**env, PARENT_ENV: str(os.getpid())},  # noqa: S603 - our own arguments
                            start_new_session=True)


def watch_parent(app: web.Application) -> None:
    """In a child: stop gracefully once the supervisor that started it is gone (even if it was SIGKILLed)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return

    async def watch() -> None:
        while os.getppid() == int(parent):  # noqa: ASYNC110 - no event tells a process its parent died
            await asyncio.sleep(1)
        log.warning("the supervisor is gone; stopping", extra={"supervisor_pid": int(parent)})
        os.kill(os.getpid(), signal.SIGTERM)

    async def start(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(watch(), name="watch-supervisor")
        yield
        task.cancel()

    app.cleanup_ctx.append(start)


def _stop_all(children: list[Child], grace_seconds: float) -> None:
    for child in children:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for child in children:
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("a bot process did not stop in time; killing it", extra={"pid": child.proc.pid})
            child.proc.kill()
            child.proc.wait()
