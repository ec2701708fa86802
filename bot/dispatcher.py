"""The dispatcher: ordered stages every event flows through, ending in the feature handlers.

Stages: parse commands → record activity (groups, members, memberships, daily activity) → route to the
handlers registered for the event's type. A handler that raises is logged with the event id; the other
handlers still run and their replies are still delivered.

Commands declare who may use them (member, group admin, bot admin). A refused command gets a polite
answer, a handler that raises UsageError gets the command's usage hint, and every admin command is
written to the audit log with its result.

A 1:1 chat has no group; its messages are recorded in the channel's 1:1 scope (a group row whose
external id is DIRECT_SCOPE), so check-ins, points and lotteries work there too, shared by everyone who
talks to the bot 1:1 on that door.
"""

from __future__ import annotations

import dataclasses
import logging
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bot.batching import GroupCommit
from bot.events import (
    Command,
    Event,
    GroupCreated,
    GroupDismissed,
    MemberJoined,
    MemberLeft,
    Reply,
    TextMessage,
)
from bot.permissions import Role, role_of
from storage import admins as admin_store
from storage import audit as audit_store
from storage import groups as group_store
from storage.activity import Tally, record_activity
from storage.groups import Group, Member

if TYPE_CHECKING:
    from bot.channels.base import Channel
    from bot.runtime import Runtime

log = logging.getLogger("qunbot.dispatch")

DIRECT_SCOPE = "@direct"

HandlerResult = Reply | str | Iterable[Reply | str] | None
Handler = Callable[[Any, "Context"], Awaitable[HandlerResult]]


@dataclass
class CommandSpec:
    """A chat command: its Chinese name, aliases (e.g. /help), and a one-line description for 帮助."""

    name: str
    aliases: tuple[str, ...]
    handler: Handler
    description: str
    usage: str = ""
    feature: str = ""
    role: Role = Role.MEMBER
    # Written to the audit log (by default: every command above member level).
    audited: bool = False


class UsageError(Exception):
    """Raised by a command handler when its arguments are malformed: the caller gets the usage hint."""


@dataclass
class Context:
    """What a handler may use: the runtime's services and facts about the event's door."""

    runtime: Runtime
    channel: Channel
    event: Event
    replies: list[Reply] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # The event's group as stored (for a 1:1 chat: the channel's 1:1 scope) and the sender, once recorded.
    group_row: Group | None = None
    member_row: Member | None = None
    # What an admin command did, for the audit log (defaults to its first reply).
    audit_detail: str = ""
    # Set by a text handler that consumed the message (e.g. a lottery's join keyword): the handlers after
    # it (the FAQ) then stay quiet. Handlers run in the order of handlers.FEATURES.
    handled: bool = False
    # The event's activity, counted by the inbox when it marks the event done.
    tally: Tally | None = None
    # The registry's probes, read with the speaker (empty when the speaker had to be written).
    probes: dict[str, Any] = field(default_factory=dict)
    _role: Role | None = None

    @property
    def db(self):  # noqa: ANN201 - storage.db.Database
        return self.runtime.db

    @property
    def config(self):  # noqa: ANN201 - bot.config.Config
        return self.runtime.config

    @property
    def templates(self):  # noqa: ANN201 - bot.templates.Templates
        return self.runtime.templates

    @property
    def capabilities(self):  # noqa: ANN201 - bot.channels.base.Capabilities
        return self.channel.capabilities

    def local_day(self, at: datetime, tz: str | None = None) -> date:
        return at.astimezone(ZoneInfo(tz or self.runtime.config.timezone)).date()

    @property
    def timezone(self) -> str:
        """The group's timezone (the bot's default when the group has none)."""
        if self.group_row is not None and self.group_row.timezone:
            return self.group_row.timezone
        return self.runtime.config.timezone

    def today(self) -> date:
        """The event's local day in its group's timezone."""
        return self.local_day(self.event.at, self.timezone)

    @property
    def sender(self) -> str:
        return getattr(self.event, "sender", None) and self.event.sender.user or ""  # type: ignore[attr-defined]

    async def role(self) -> Role:
        """The sender's role in the event's group (cached for the event)."""
        if self._role is None:
            async with self.db.read_session() as session:
                self._role = await role_of(
                    session, self.config, channel=self.event.channel, user=self.sender,
                    group_id=self.group_row.id if self.group_row else None,
                    member_id=self.member_row.id if self.member_row else None)
        return self._role


class Registry:
    """Where feature modules register their handlers, commands and start-up hooks."""

    def __init__(self) -> None:
        self.handlers: list[tuple[type[Event], str, Handler]] = []
        self.commands: dict[str, CommandSpec] = {}
        self.startup: list[Callable[[Runtime], Awaitable[None]]] = []
        # Scalar SQL expressions over the speaker's group (`g`), read in the speaker's own statement.
        self.probes: dict[str, str] = {}
        self._feature = ""

    def feature(self, name: str) -> Registry:
        self._feature = name
        return self

    def on(self, event_type: type[Event]) -> Callable[[Handler], Handler]:
        """Decorator: call the handler for events of this type (and its subclasses)."""

        def register(fn: Handler) -> Handler:
            self.handlers.append((event_type, f"{self._feature}.{fn.__name__}", fn))
            return fn

        return register

    def probe(self, name: str, sql: str) -> None:
        """Read `sql` (a scalar expression over the speaker's group row, aliased `g`, with literal constants
        only) in the same statement that finds the speaker of a message; handlers find its value in
        `ctx.probes[name]`. Meant for cheap per-message checks (a revision counter, whether anything is
        open) that would otherwise cost a round trip each. Absent when the speaker had to be written."""
        if name in self.probes:
            raise ValueError(f"probe {name!r} registered twice")
        self.probes[name] = sql

    def command(self, name: str, *aliases: str, description: str = "", usage: str = "",
                role: Role = Role.MEMBER, audited: bool | None = None) -> Callable[[Handler], Handler]:
        """Decorator: call the handler when a message starts with the command's name or an alias.

        `role` is the least role that may use it; `usage` is shown when the handler raises UsageError.
        """

        def register(fn: Handler) -> Handler:
            spec = CommandSpec(name, aliases, fn, description, usage, self._feature, role,
                               role > Role.MEMBER if audited is None else audited)
            for word in (name, *aliases):
                key = normalize_command_word(word)
                if key in self.commands:
                    raise ValueError(f"command word {word!r} registered twice")
                self.commands[key] = spec
            return fn

        return register

    def on_startup(self, fn: Callable[[Runtime], Awaitable[None]]) -> Callable[[Runtime], Awaitable[None]]:
        self.startup.append(fn)
        return fn

    def unique_commands(self) -> list[CommandSpec]:
        seen: dict[str, CommandSpec] = {}
        for spec in self.commands.values():
            seen.setdefault(spec.name, spec)
        return list(seen.values())


def normalize_text(text: str) -> str:
    """Full-width to half-width, collapse white space (NFKC keeps Chinese as is)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def normalize_command_word(word: str) -> str:
    return normalize_text(word).lower()


def parse_command(text: str, commands: dict[str, CommandSpec]) -> tuple[CommandSpec, str] | None:
    """Find a command at the start of a message, after any leading @-mentions."""
    words = normalize_text(text).split(" ")
    while words and words[0].startswith("@"):
        words.pop(0)
    if not words or not words[0]:
        return None
    spec = commands.get(words[0].lower())
    if spec is None:
        return None
    return spec, " ".join(words[1:])


# At most this many speakers in one read (a VALUES list of 4 parameters each).
SPEAKER_BATCH_MAX = 64


class Dispatcher:
    """Runs an event through the stages and returns the replies the handlers produced."""

    def __init__(self, runtime: Runtime, registry: Registry) -> None:
        self.runtime = runtime
        self.registry = registry
        # Speakers of concurrent messages are looked up together: one statement instead of one round trip each.
        self._speakers: GroupCommit[tuple[str, str, str], group_store.Speaker | None] = GroupCommit(
            [self._read_speakers], SPEAKER_BATCH_MAX)

    async def _read_speakers(self, wanted: list[tuple[str, str, str]]) -> list[group_store.Speaker | None]:
        return await group_store.find_speakers(self.runtime.db, wanted, list(self.registry.probes.values()))

    async def stop(self) -> None:
        await self._speakers.stop()

    async def dispatch(self, event: Event, channel: Channel) -> Context:
        ctx = Context(self.runtime, channel, self._parse_command(event))
        await self._record(ctx)
        await self._route(ctx)
        return ctx

    def _parse_command(self, event: Event) -> Event:
        if type(event) is not TextMessage:
            return event
        found = parse_command(event.text, self.registry.commands)
        if found is None:
            return event
        spec, args = found
        values = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.init}
        command = Command(**values, name=spec.name, args=args)
        command.id = event.id
        return command

    async def _record(self, ctx: Context) -> None:
        """Keep groups, members and memberships up to date, and tally daily activity (a failure here
        retries the event).

        A message from a member already known in the group, under the same names, needs no write: one
        read finds the rows. The activity count is handed to the inbox, which writes it in the same
        transaction that marks the event done (so it counts once, and a busy group costs one upsert per
        member and batch instead of a write transaction per message).
        """
        event = ctx.event
        scope = event.group
        if scope is None and isinstance(event, TextMessage) and event.sender.user:
            scope = DIRECT_SCOPE
        if scope is None:
            return
        name = event.name if isinstance(event, GroupCreated) else event.group_name
        if scope == DIRECT_SCOPE:
            name = self.runtime.templates.raw("scope.direct_name")
        speaking = isinstance(event, TextMessage) and bool(event.sender.user)
        if not (speaking and await self._known_speaker(ctx, scope, name)):
            await self._write_membership(ctx, scope, name)
        if speaking and ctx.group_row is not None and ctx.member_row is not None:
            tally = Tally(ctx.group_row.id, ctx.member_row.id,  # type: ignore[arg-type]
                          ctx.local_day(event.at, ctx.group_row.timezone), event.at, isinstance(event, Command))
            if event.id is not None:
                ctx.tally = tally
            else:  # dispatched outside the inbox (nothing to count it with): count it now
                async with self.runtime.db.session() as session:
                    await record_activity(session, group_id=tally.group_id, member_id=tally.member_id,
                                          day=tally.day, at=tally.at, command=tally.command)

    async def _known_speaker(self, ctx: Context, scope: str, group_name: str | None) -> bool:
        """Find the group, the sender and their open stay in one read; False if anything must be written."""
        event: TextMessage = ctx.event  # type: ignore[assignment]
        if event.sender.role is not None:
            return False
        if not self._speakers.started:
            self._speakers.start("speakers")
        row = await self._speakers.submit((event.channel, scope, event.sender.user))
        if row is None:
            return False
        group, member, stay, probed = row
        if not stay or (group_name and group.name != group_name) or (event.sender.name and
                                                                          member.name != event.sender.name):
            return False
        ctx.group_row, ctx.member_row = group, member
        ctx.probes = dict(zip(self.registry.probes, probed, strict=True))
        return True

    async def _write_membership(self, ctx: Context, scope: str, name: str | None) -> None:
        event = ctx.event
        async with self.runtime.db.session() as session:
            group = await group_store.ensure_group(session, event.channel, scope, name)
            ctx.group_row = group
            if isinstance(event, MemberJoined):
                for person in event.members:
                    member = await group_store.ensure_member(session, event.channel, person.user, person.name, person.kind)
                    inviter_id = person.inviter or event.inviter
                    inviter = (await group_store.ensure_member(session, event.channel, inviter_id)
                               if inviter_id else None)
                    await group_store.open_membership(session, group, member, joined_at=event.at,
                                                      join_scene=person.scene or event.scene, inviter=inviter)
                if event.admins is not None:
                    admins = [((await group_store.ensure_member(session, event.channel, user)).id, role)
                              for user, role in event.admins.items()]
                    await admin_store.set_platform_admins(session, group.id, admins)  # type: ignore[arg-type]
            elif isinstance(event, MemberLeft):
                for person in event.members:
                    member = await group_store.ensure_member(session, event.channel, person.user, person.name)
                    await group_store.close_membership(session, group, member, left_at=event.at,
                                                       leave_scene=event.scene)
            elif isinstance(event, GroupDismissed):
                await group_store.dismiss_group(session, group, event.at)
            elif isinstance(event, TextMessage) and event.sender.user:
                member = await group_store.ensure_member(session, event.channel, event.sender.user,
                                                         event.sender.name)
                ctx.member_row = member
                if event.sender.role in ("owner", "admin"):
                    await admin_store.add_admin(session, group.id, member.id,  # type: ignore[arg-type]
                                                source=admin_store.PLATFORM, detail=event.sender.role)
                elif event.sender.role == "member":
                    await admin_store.remove_admin(session, group.id, member.id,  # type: ignore[arg-type]
                                                   source=admin_store.PLATFORM)
                # Someone speaking is in the group even if we never saw them join.
                await group_store.open_membership(session, group, member, joined_at=event.at, join_scene="seen")

    async def _route(self, ctx: Context) -> None:
        event = ctx.event
        targets: list[tuple[str, Handler]] = [
            (name, fn) for event_type, name, fn in self.registry.handlers if isinstance(event, event_type)
        ]
        spec: CommandSpec | None = None
        if isinstance(event, Command):
            spec = self.registry.commands[normalize_command_word(event.name)]
            targets.append((f"{spec.feature}.{spec.name}", spec.handler))
        for name, fn in targets:
            is_command = spec is not None and fn is spec.handler
            try:
                if is_command:
                    result = await self._run_command(spec, event, ctx)  # type: ignore[arg-type]
                else:
                    result = await fn(event, ctx)
            except Exception as exc:
                ctx.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                log.exception("handler failed", extra={"event_id": event.id, "event_key": event.key,
                                                       "channel": event.channel, "group": event.group,
                                                       "handler": name})
                continue
            ctx.replies.extend(_as_replies(result))

    async def _run_command(self, spec: CommandSpec, event: Command, ctx: Context) -> HandlerResult:
        """Check the caller's role, run the command, turn UsageError into the usage hint, audit."""
        templates = self.runtime.templates
        role = await ctx.role()
        if role < spec.role:
            reply: HandlerResult = Reply(templates.render(
                "command.refused", name=spec.name, role=templates.raw(f"roles.{spec.role.label}")))
            await self._audit(spec, event, ctx, audit_store.REFUSED, f"caller is {role.label}")
            return reply
        try:
            result = await spec.handler(event, ctx)
        except UsageError as exc:
            hint = templates.render("command.usage", name=spec.name, usage=spec.usage or spec.name)
            problem = str(exc)
            text = f"{templates.render('command.problem', problem=problem)}\n{hint}" if problem else hint
            await self._audit(spec, event, ctx, audit_store.USAGE, problem)
            return Reply(text)
        except Exception as exc:
            await self._audit(spec, event, ctx, audit_store.ERROR, f"{type(exc).__name__}: {exc}")
            raise
        if spec.audited:
            detail = ctx.audit_detail or next((r.text for r in _as_replies(result)), "")
            await self._audit(spec, event, ctx, audit_store.OK, detail)
        return result

    async def _audit(self, spec: CommandSpec, event: Command, ctx: Context, result: str, detail: str) -> None:
        if not spec.audited:
            return
        try:
            async with self.runtime.db.session() as session:
                await audit_store.record(session, source="chat", channel=event.channel,
                                         group=event.group or (ctx.group_row.external_id if ctx.group_row else ""),
                                         actor=event.sender.user, command=spec.name, args=event.args,
                                         result=result, detail=detail[:500], at=event.at)
        except Exception:
            log.exception("audit log write failed", extra={"event_id": event.id, "command": spec.name})


def _as_replies(result: HandlerResult) -> list[Reply]:
    if result is None:
        return []
    if isinstance(result, Reply):
        return [result]
    if isinstance(result, str):
        return [Reply(result)]
    return [r if isinstance(r, Reply) else Reply(r) for r in result]
