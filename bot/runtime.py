"""The runtime: one per process, holding the services every part of the bot shares."""

from __future__ import annotations

import logging
import os
import socket

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.channels.base import Channel
from bot.config import Config
from bot.dispatcher import Dispatcher, Registry
from bot.inbox import Inbox
from bot.templates import Templates
from storage.db import Database

log = logging.getLogger("qunbot.runtime")


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
        self.scheduler = AsyncIOScheduler(timezone=config.timezone)

    def add_channel(self, channel: Channel) -> None:
        self.channels[channel.name] = channel

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
            self.scheduler.shutdown(wait=False)
        await self.inbox.stop(self.config.server.shutdown_timeout_seconds)
        for channel in self.channels.values():
            await channel.stop()
        if self.http is not None:
            await self.http.close()
        await self.db.close()
