"""The aiohttp application: routes of the enabled doors, health, and the runtime's lifecycle."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from bot.channels import DOORS, door_class
from bot.config import Config
from bot.http import json_response
from bot.runtime import Runtime
from storage.migrate import upgrade

log = logging.getLogger("qunbot.app")
RUNTIME = web.AppKey("runtime", Runtime)


def build_runtime(config: Config) -> Runtime:
    """A runtime with every door the configuration enables."""
    runtime = Runtime(config)
    for name in DOORS:
        if getattr(config, name).enabled:
            runtime.add_channel(door_class(name)(runtime))
    return runtime


def create_app(config: Config, runtime: Runtime | None = None) -> web.Application:
    """The web application; starting it migrates (if configured) and starts the runtime."""
    runtime = runtime or build_runtime(config)
    app = web.Application(client_max_size=1024 * 1024)
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    for channel in runtime.channels.values():
        channel.add_routes(app)
    if config.console.enabled:
        from bot.console import add_routes as add_console_routes

        add_console_routes(app, runtime)  # /console: pages, /console/api, linking /simulator when it is on

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if config.auto_migrate:
            await upgrade(config.database.url)
        await runtime.start()
        yield
        await runtime.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


def freeze_after_startup(app: web.Application) -> None:
    """For a server process: once started, move everything built so far (modules, templates, the FAQ's
    tokenizer, the schema), which lives as long as the process, out of the garbage collector's sight, so a full
    collection during a burst walks only what the burst allocated. It walked all of it, 140-175 ms at a time
    while callbacks waited (measured under bench/callback_path.py). Not for tests, which start many apps in
    one process."""

    async def freeze(_app: web.Application) -> None:
        gc.collect()
        gc.freeze()

    app.on_startup.append(freeze)  # after the runtime started (cleanup contexts run first)


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    # The pid says which process answered (with server.processes > 1 the kernel picks one per connection).
    body = {"database": runtime.db.dialect, "pid": os.getpid()}
    if await runtime.db.ping():
        return json_response({"status": "ok", **body})
    return json_response({"status": "unavailable", **body}, status=503)


async def index(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    if "simulator" in runtime.channels:
        raise web.HTTPFound("/simulator")
    if runtime.config.console.enabled:
        raise web.HTTPFound("/console")
    return json_response({"name": "qunbot", "channels": sorted(runtime.channels)})
