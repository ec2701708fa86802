"""Welcome messages: greet newcomers, merging a burst of joins into one message.

Where a door can post into the group (simulator, gateways), the bot posts the welcome itself. Where the
platform sends welcomes from a template (WeCom customer groups), the bot keeps that template in sync.
"""

from __future__ import annotations

import asyncio
import logging
import string
import time

from sqlalchemy import select

from bot.config import Config
from bot.dispatcher import Context, Registry
from bot.events import ChatEntered, MemberJoined, Reply
from bot.runtime import Runtime
from bot.templates import Templates, render_text
from storage import groups as group_store
from storage import welcome as store
from storage.db import Database, utcnow
from storage.groups import Member

log = logging.getLogger("qunbot.welcome")
# A burst that never pauses is still welcomed after this many merge windows.
MAX_WAIT_WINDOWS = 10


def setup(registry: Registry) -> None:
    registry.on(MemberJoined)(welcome_new_members)
    registry.on(ChatEntered)(greet_chat_entered)
    registry.on_startup(start_platform_template_sync)


async def welcome_new_members(event: MemberJoined, ctx: Context) -> Reply | None:
    """Queue the newcomers, wait out the merge window, then welcome everyone still unwelcomed at once."""
    if not ctx.capabilities.posts_welcome or event.group is None or not event.members:
        return None
    cfg = ctx.config.welcome
    async with ctx.db.session() as session:
        group = await group_store.ensure_group(session, event.channel, event.group, event.group_name)
        settings = await store.get_settings(session, group.id)  # type: ignore[arg-type]
        enabled = cfg.enabled if settings is None or settings.enabled is None else settings.enabled
        if not enabled:
            return None
        for person in event.members:
            member = await group_store.ensure_member(session, event.channel, person.user, person.name)
            await store.add_pending(session, group.id, member.id, person.name or person.user)  # type: ignore[arg-type]

    batch = await _wait_for_burst_to_end(ctx, group.id, cfg.merge_window_seconds)  # type: ignore[arg-type]
    if not batch:
        return None  # another join's handler (here or in another process) welcomed these members
    async with ctx.db.session() as session:
        users = (await session.execute(
            select(Member.id, Member.external_id).where(Member.id.in_([p.member_id for p in batch]))  # type: ignore[union-attr]
        )).all()
        count = await group_store.member_count(session, group)
    by_id = dict(users)
    text = render_welcome(ctx, group_name=group.name or group.external_id, names=[p.name for p in batch],
                          member_count=count, template=settings.template if settings else None,
                          rules=settings.rules if settings else None)
    log.info("welcome posted", extra={"group": event.group, "members": len(batch), "event_id": event.id})
    return Reply(text, mentions=[by_id[p.member_id] for p in batch if p.member_id in by_id])


async def greet_chat_entered(event: ChatEntered, ctx: Context) -> Reply | None:
    """Someone opened a 1:1 chat with the bot (a door that reports it shows this as its greeting)."""
    if not ctx.config.welcome.enabled:
        return None
    return Reply(ctx.templates.raw("welcome.enter_chat"))


async def _wait_for_burst_to_end(ctx: Context, group_id: int, window: float) -> list[store.PendingWelcome]:
    """Wait until no join was queued for a whole window (bounded), then claim every unwelcomed join."""
    deadline = time.monotonic() + max(MAX_WAIT_WINDOWS * window, window)
    while True:
        await asyncio.sleep(window)
        async with ctx.db.session() as session:
            latest = await store.latest_pending(session, group_id)
            if latest is None:
                return []
            quiet = (utcnow() - latest).total_seconds() >= window * 0.95
            if quiet or time.monotonic() >= deadline:
                return await store.claim_pending(session, group_id)


def render_welcome(ctx: Context, *, group_name: str, names: list[str], member_count: int,
                   template: str | None = None, rules: str | None = None) -> str:
    """The welcome text for these newcomers, from the group's template or the configured default."""
    return _render(ctx.config, ctx.templates, group_name=group_name, names=names, member_count=member_count,
                   template=template, rules=rules)


def _render(config: Config, templates: Templates, *, group_name: str, names: list[str], member_count: int,
            template: str | None, rules: str | None) -> str:
    rules = rules if rules is not None else config.welcome.rules
    rules_line = templates.render("welcome.rules_line", rules=rules) if rules else ""
    separator = templates.raw("welcome.name_separator")
    text = template or config.welcome.template or templates.raw("welcome.default")
    return render_text(text, names=separator.join(f"@{n}" for n in names), count=len(names),
                       group_name=group_name, member_count=member_count, rules=rules_line).strip()


PLACEHOLDERS = {"names", "group_name", "member_count", "rules", "count"}


async def update_welcome_settings(db: Database, channel: str, group: str, **changes: object) -> None:
    """Change a group's welcome switch, text or rules (None resets to the default); checks placeholders."""
    template = changes.get("template")
    if isinstance(template, str):
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        except ValueError as exc:
            raise ValueError(f"welcome text has a stray brace: {exc}") from None
        unknown = used - PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholder(s) {', '.join(sorted(unknown))}; "
                             f"use {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))}")
    async with db.session() as session:
        row = await group_store.ensure_group(session, channel, group)
        await store.save_settings(session, row.id, **changes)  # type: ignore[arg-type]


async def preview_welcome(db: Database, config: Config, channel: str, group: str) -> str:
    """The group's settings and the welcome a newcomer named 小新 would get now."""
    enabled, text = await welcome_preview(db, config, channel, group)
    return f"group {channel}/{group}: welcome {'on' if enabled else 'off'}\n---\n{text}"


async def welcome_preview(db: Database, config: Config, channel: str, group: str,
                          templates: Templates | None = None) -> tuple[bool, str]:
    """Whether the group's welcome is on, and the welcome a newcomer named 小新 would get now (CLI, console)."""
    async with db.session() as session:
        row = await group_store.ensure_group(session, channel, group)
        settings = await store.get_settings(session, row.id)  # type: ignore[arg-type]
        count = await group_store.member_count(session, row)
    enabled = config.welcome.enabled if settings is None or settings.enabled is None else settings.enabled
    text = _render(config, templates or Templates(config.templates.file or None), group_name=row.name or row.external_id,
                   names=["小新"], member_count=count + 1, template=settings.template if settings else None,
                   rules=settings.rules if settings else None)
    return enabled, text


def platform_welcome_text(runtime: Runtime) -> str:
    """The text for platforms that send welcomes themselves (%NICKNAME% is filled in by the platform)."""
    cfg = runtime.config.welcome
    rules_line = runtime.templates.render("welcome.rules_line", rules=cfg.rules) if cfg.rules else ""
    text = cfg.platform_template or runtime.templates.raw("welcome.platform_default")
    return render_text(text, rules=rules_line).strip()


async def start_platform_template_sync(runtime: Runtime) -> None:
    """Keep each template-based door's welcome in sync with ours, in the background."""
    if not runtime.config.welcome.enabled:
        return
    for channel in runtime.channels.values():
        sync = getattr(channel, "sync_welcome_template", None)
        if channel.capabilities.welcome_template and sync is not None:
            channel.spawn(sync(platform_welcome_text(runtime)), name=f"{channel.name}-welcome-sync")
