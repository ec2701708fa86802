"""The runtime: one per process, holding the services every part of the bot shares."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket

import aiohttp
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.channels.base import Channel
from bot.config import Config
from bot.dispatcher import Dispatcher, Registry
from bot.inbox import Inbox
from bot.templates import Templates
from storage.db import Database

log = logging.getLogger("qunbot.runtime")


class _WaitableExecutor(AsyncIOExecutor):
    """APScheduler's asyncio executor, except that shutting down lets running jobs finish (awaitable)."""

    def shutdown(self, wait: bool = True) -> None:
        """Running jobs are left to `finish`."""

    async def finish(self, grace_seconds: float) -> None:
        running = [f for f in getattr(self, "_pending_futures", ()) if not f.done()]
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=grace_seconds)
        for future in late:
            future.cancel()
        if late:
            await asyncio.wait(late, timeout=1)


class Runtime:
    """Config, database, templates, feature registry, dispatcher, inbox and the enabled channels."""

    def __init__(self, config: Config, registry: Registry | None = None) -> None:
        from handlers import load_features

        self.config = config
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.db = Database(config.database.url, pool_size=config.database.pool_size, echo=config.database.echo)
        self.templates = Templates(config.templates.file or None)
        self.registry = registry or load_features(Registry())
        self.dispatcher = Dispatcher(self, self.registry)
        self.inbox = Inbox(self)
        self.channels: dict[str, Channel] = {}
        self.http: aiohttp.ClientSession | None = None
        self.wecom = None  # bot.channels.wecom_api.WeComClient when WeCom is configured
        # Timing only (APScheduler 3, in memory): what is due lives in the database, and jobs look there.
        self._jobs = _WaitableExecutor()
        self.scheduler = AsyncIOScheduler(timezone=config.timezone, executors={"default": self._jobs})

    def add_channel(self, channel: Channel) -> None:
        self.channels[channel.name] = channel

    def new_holder(self) -> str:
        """A name for holding leases: this host and pid, plus a token (several runtimes, or several workers
        of one, share a pid). At most 128 characters, like the lease columns."""
        return f"{self.instance[:119]}:{secrets.token_hex(4)}"

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        for channel in self.channels.values():
            await channel.start()
        await self.inbox.start()
        self.scheduler.start()
        for hook in self.registry.startup:
            await hook(self)
        log.info("bot started", extra={"instance": self.instance, "channels": ",".join(self.channels),
                                       "database": self.db.dialect})

    async def stop(self) -> None:
        if self.scheduler.running:
            # No new runs; the running ones finish (or are cancelled) before the database goes away.
            self.scheduler.shutdown(wait=False)
            await self._jobs.finish(self.config.server.shutdown_timeout_seconds)
        await self.inbox.stop(self.config.server.shutdown_timeout_seconds)
        await self.dispatcher.stop()
        for channel in self.channels.values():
            await channel.stop()
        if self.http is not None:
            await self.http.close()
        await self.db.close()
