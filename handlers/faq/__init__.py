"""Keyword FAQ: answer members' common questions, offer suggestions when unsure, stay silent otherwise.

Every plain text message (not a command, not consumed by an earlier feature) in a group or a 1:1 chat is
matched against the group's own entries and the global ones it does not override. Above
faq.answer_threshold the bot answers; in the band down to faq.suggest_threshold it offers up to
faq.max_suggestions questions ("你是不是想问：…"); below it stays silent, because a group bot that answers
ordinary chat is worse than none. Questions left unanswered are logged for ops, grouped by similarity.

The same entry is not repeated in a group within faq.cooldown_seconds: inside the cooldown the bot stays
silent (the answer is still on screen). The claim is one atomic row in the database, so two processes
answering the same question at once answer once, and a retried event may answer again.

Doors: every door that delivers text serves the FAQ. Where a door only delivers @-mentions (WeCom smart
bot and group robot), members ask by @-mentioning the bot; 1:1 chats to the app are answered 1:1.

Admin commands (问答): group admins add and remove their group's entries; bot admins also the global ones.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import timedelta

from bot.dispatcher import DIRECT_SCOPE, Context, Registry, UsageError
from bot.events import Command, Reply, TextMessage
from bot.permissions import Role
from handlers.faq.index import (
    Analyzer,
    Entry,
    FaqIndex,
    Match,
    decide,
    looks_like_question,
    may_suggest,
    normalize,
    question_key,
    shared_tokenizer,
)
from handlers.faq.transfer import MAX_QUESTION, FaqRow, check_entry, split_aliases
from storage import audit as audit_store
from storage import faq as store
from storage.db import Database
from storage.faq import FaqEntry

log = logging.getLogger("qunbot.faq")

LIST_WORDS = {"列表", "查看", "list", "ls"}
ADD_WORDS = {"添加", "增加", "新增", "修改", "add"}
ADD_GLOBAL_WORDS = {"添加通用", "添加全局", "新增通用", "add-global"}
REMOVE_WORDS = {"删除", "移除", "remove", "del", "rm"}
SCOPE_ACTION_WORDS = {"范围", "scope"}
# What 问答 范围 and `qunbot faq scope` accept for each FAQ scope (storage.faq.SCOPES).
SCOPE_WORDS = {
    **dict.fromkeys(("全部", "都", "两者", "all", "both"), store.SCOPE_ALL),
    **dict.fromkeys(("本群", "仅本群", "群内", "group"), store.SCOPE_GROUP),
    **dict.fromkeys(("通用", "仅通用", "全局", "global"), store.SCOPE_GLOBAL),
    **dict.fromkeys(("关闭", "关", "不回答", "off", "none"), store.SCOPE_OFF),
}
LIST_LIMIT = 30
# Leading @-mentions ("@群助手 怎么退货") are not part of the question.
_MENTIONS = re.compile(r"^\s*(?:@\S+\s+)+")


# The scopes' revisions and the group's FAQ scope setting, read with each message's speaker (Registry.probe).
PROBE_GROUP, PROBE_GLOBAL = "faq.group_revision", "faq.global_revision"
PROBE_SCOPE = "faq.group_scope"


def setup(registry: Registry) -> None:
    service = FaqService()
    registry.on_startup(service.start)
    registry.probe(PROBE_GROUP, "SELECT revision FROM faq_revisions WHERE scope = g.id")
    registry.probe(PROBE_GLOBAL, f"SELECT revision FROM faq_revisions WHERE scope = {int(store.GLOBAL_SCOPE)}")  # noqa: S608 - a constant
    registry.probe(PROBE_SCOPE, "SELECT scope FROM faq_group_settings WHERE group_id = g.id")
    registry.on(TextMessage)(service.answer)

    @registry.command("问答", "/faq", description="常见问题：查看列表；管理员可添加、删除",
                      usage="问答 [列表] ｜ 问答 添加 问题 | 答案 | 别名1|别名2 ｜ 问答 删除 编号或问题"
                            " ｜ 问答 范围 [全部|本群|通用|关闭] ｜ 问答 添加通用 …（机器人管理员）",
                      role=Role.MEMBER, audited=False)
    async def faq_command(event: Command, ctx: Context) -> Reply:
        action, rest = _split_action(event)
        if action in LIST_WORDS or not action:
            return Reply(await render_list(ctx))
        if action in ADD_WORDS | ADD_GLOBAL_WORDS:
            return await _admin(event, ctx, f"问答 {action}", Role.BOT_ADMIN if action in ADD_GLOBAL_WORDS
                                else Role.GROUP_ADMIN, lambda: _add(ctx, rest, glob=action in ADD_GLOBAL_WORDS))
        if action in REMOVE_WORDS:
            return await _admin(event, ctx, f"问答 {action}", Role.GROUP_ADMIN, lambda: _remove(ctx, rest))
        if action in SCOPE_ACTION_WORDS:
            if not rest:
                return Reply(await render_scope(ctx))
            return await _admin(event, ctx, f"问答 {action}", Role.GROUP_ADMIN, lambda: _set_scope(ctx, rest))
        raise UsageError(ctx.templates.render("faq.problem_unknown_action", action=action))


@dataclass
class _Scope:
    """One scope's entries as this process last loaded them, with their index."""

    revision: int
    index: FaqIndex
    entries: dict[int, FaqEntry]
    keys: set[str]


@dataclass
class FaqService:
    """Per runtime: the analyzer and one in-memory index per scope, reloaded when its revision changes."""

    analyzer: Analyzer | None = None
    scopes: dict[int, _Scope] = field(default_factory=dict)
    _locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    _analyzer_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self, runtime) -> None:  # noqa: ANN001 - bot.runtime.Runtime
        """Initialise jieba (about a second) in a thread, before the first question needs it."""
        await self._get_analyzer(runtime.config)

    async def _get_analyzer(self, config) -> Analyzer:  # noqa: ANN001 - bot.config.Config
        async with self._analyzer_lock:
            if self.analyzer is None:
                cfg = config.faq
                self.analyzer = await asyncio.to_thread(
                    lambda: Analyzer(shared_tokenizer(), cfg.synonyms, cfg.stopwords))
            return self.analyzer

    async def _scope(self, db: Database, analyzer: Analyzer, scope: int, revision: int) -> _Scope:
        """The scope's index at `revision` or later, rebuilt (once, off the loop) when stale."""
        current = self.scopes.get(scope)
        if current is not None and current.revision == revision:
            return current
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            current = self.scopes.get(scope)
            if current is not None and current.revision == revision:
                return current  # built while this one waited for the lock
            async with db.session() as session:
                # Read the revision with the rows, so the index is never labelled newer than its data.
                fresh = (await store.revisions(session, [scope]))[scope]
                rows = await store.entries_in_scope(session, None if scope == store.GLOBAL_SCOPE else scope)
            entries = [Entry(r.id, r.question, r.alias_list) for r in rows]  # type: ignore[arg-type]
            index = await asyncio.to_thread(FaqIndex.build, analyzer, entries)
            built = _Scope(fresh, index, {r.id: r for r in rows}, {r.question_key for r in rows})  # type: ignore[misc]
            self.scopes[scope] = built
            log.info("faq index built", extra={"scope": scope, "revision": fresh, "entries": len(entries)})
            return built

    async def search(self, ctx: Context, text: str, scope: str = store.SCOPE_ALL) -> tuple[list[Match], dict[int, FaqEntry]]:
        """Matches among the group's entries and the global ones it does not override, best first (the
        group's FAQ scope may leave out either)."""
        analyzer = await self._get_analyzer(ctx.config)
        assert ctx.group_row is not None and ctx.group_row.id is not None
        group_scope = ctx.group_row.id
        if PROBE_GROUP in ctx.probes:  # read with the speaker: no round trip of its own
            revs = {group_scope: int(ctx.probes[PROBE_GROUP] or 0),
                    store.GLOBAL_SCOPE: int(ctx.probes[PROBE_GLOBAL] or 0)}
        else:
            revs = await store.current_revisions(ctx.db, [store.GLOBAL_SCOPE, group_scope])
        limit = max(ctx.config.faq.max_suggestions, 1) + 1
        use_own, use_shared = scope != store.SCOPE_GLOBAL, scope != store.SCOPE_GROUP
        own = await self._scope(ctx.db, analyzer, group_scope, revs[group_scope])
        shared = await self._scope(ctx.db, analyzer, store.GLOBAL_SCOPE, revs[store.GLOBAL_SCOPE])
        if not (use_own and len(own.index)) and not (use_shared and len(shared.index)):
            return [], {}
        features = analyzer.features(text)
        topic_only = not looks_like_question(text)
        matches = own.index.search_features(features, limit, topic_only=topic_only) if use_own else []
        entries = dict(own.entries) if use_own else {}
        own_keys = own.keys if use_own else set()
        for match in (shared.index.search_features(features, limit + len(own_keys), topic_only=topic_only)
                      if use_shared else []):
            entry = shared.entries[match.entry_id]
            if entry.question_key not in own_keys:
                matches.append(match)
                entries[match.entry_id] = entry
        matches.sort(key=lambda m: (-m.confidence, m.entry_id))
        return matches, entries

    async def answer(self, event: TextMessage, ctx: Context) -> Reply | None:
        """The text handler: answer, suggest, or stay silent (and log the question for ops)."""
        cfg = ctx.config.faq
        if type(event) is not TextMessage or ctx.handled or not cfg.enabled or ctx.group_row is None:
            return None
        text = _MENTIONS.sub("", event.text).strip()
        if len(text) > cfg.max_chars or len(normalize(text).replace(" ", "")) < cfg.min_chars:
            return None
        scope = await _group_scope(ctx)
        if scope == store.SCOPE_OFF:
            return None
        matches, entries = await self.search(ctx, text, scope)
        decision = decide(matches, answer_threshold=cfg.answer_threshold, suggest_threshold=cfg.suggest_threshold,
                          max_suggestions=cfg.max_suggestions, suggest=may_suggest(text))
        ref = f"{event.channel}:{event.key}"
        audience = event.sender.user if event.group is None or ctx.group_row.external_id == DIRECT_SCOPE else ""
        mentions = [event.sender.user] if event.group is not None and ctx.capabilities.mentions else []
        log_fields = {"event_id": event.id, "group": event.group, "best": round(decision.best, 3)}
        group_id: int = ctx.group_row.id  # type: ignore[assignment]
        if decision.answer is not None:
            entry = entries[decision.answer.entry_id]
            async with ctx.db.session() as session:
                if not await self._claim(session, ctx, entry.id, store.ANSWER, audience, ref):  # type: ignore[arg-type]
                    log.info("faq answer in cooldown", extra={**log_fields, "entry": entry.id})
                    return None
                # The daily count behind the console's "answered against unanswered" chart, once per event.
                await store.count_event(session, event_id=event.id, group_id=group_id, day=ctx.today(), answered=1)
            ctx.handled = True
            log.info("faq answered", extra={**log_fields, "entry": entry.id})
            return Reply(ctx.templates.render("faq.answer", question=entry.question, answer=entry.answer),
                         mentions=mentions)
        question = looks_like_question(text) and self.analyzer is not None
        if not decision.suggestions and not question:
            return None
        async with ctx.db.session() as session:
            offered = bool(decision.suggestions) and await self._claim(
                session, ctx, decision.suggestions[0].entry_id, store.SUGGEST, audience, ref)
            # Counted once per event (a retry adds nothing), the question logged for ops with it.
            if (offered or question) and await store.count_event(
                    session, event_id=event.id, group_id=group_id, day=ctx.today(), suggested=int(offered),
                    unanswered=int(question)):
                key = self.analyzer.cluster_key(text) if question and cfg.log_unanswered and self.analyzer else ""
                if key:
                    await store.log_unanswered(session, group_id=group_id, cluster_key=key, sample=text,
                                               event_ref=ref, at=event.at)
        if not offered:
            return None
        t = ctx.templates
        lines = [t.raw("faq.suggest_header")]
        lines += [t.render("faq.suggest_line", n=n, question=entries[m.entry_id].question)
                  for n, m in enumerate(decision.suggestions, 1)]
        lines.append(t.raw("faq.suggest_footer"))
        log.info("faq suggested", extra={**log_fields, "entries": ",".join(str(m.entry_id) for m in decision.suggestions)})
        return Reply("\n".join(lines), mentions=mentions)

    @staticmethod
    async def _claim(session, ctx: Context, entry_id: int, kind: str, audience: str, ref: str) -> bool:  # noqa: ANN001
        """Claim the cooldown of an entry (answer or suggestion) in the caller's transaction: True when the bot
        may post it now."""
        seconds = ctx.config.faq.cooldown_seconds
        assert ctx.group_row is not None
        return seconds <= 0 or await store.claim_cooldown(
            session, group_id=ctx.group_row.id, audience=audience,  # type: ignore[arg-type]
            entry_id=entry_id, kind=kind, event_ref=ref, cooldown=timedelta(seconds=seconds), now=ctx.event.at)


async def _group_scope(ctx: Context) -> str:
    """The group's FAQ scope: read with the speaker when possible, else one primary-key lookup."""
    if PROBE_SCOPE in ctx.probes:
        return ctx.probes[PROBE_SCOPE] or store.SCOPE_ALL
    from storage import fastsql

    assert ctx.group_row is not None
    rows = await fastsql.fetch(ctx.db, "SELECT scope FROM faq_group_settings WHERE group_id = ?", [ctx.group_row.id])
    return rows[0][0] if rows else store.SCOPE_ALL


# -- the 问答 command ----------------------------------------------------------------------------------


def _split_action(event: Command) -> tuple[str, str]:
    """(action word, the rest exactly as typed: an answer keeps its newlines and full-width punctuation)."""
    parts = _MENTIONS.sub("", event.text).strip().split(None, 2)  # command word, action, rest
    action = unicodedata.normalize("NFKC", parts[1]).lower() if len(parts) > 1 else ""
    return action, parts[2].strip() if len(parts) > 2 else ""


async def render_list(ctx: Context) -> str:
    """The questions members of this group can ask (its own first, then the global ones)."""
    t = ctx.templates
    assert ctx.group_row is not None
    async with ctx.db.session() as session:
        rows = await store.visible_entries(session, ctx.group_row.id)  # type: ignore[arg-type]
    if not rows:
        return t.raw("faq.list_empty")
    lines = [t.render("faq.list_header", count=len(rows))]
    for row in rows[:LIST_LIMIT]:
        scope = t.raw("faq.scope_global" if row.group_id is None else "faq.scope_group")
        lines.append(t.render("faq.list_line", id=row.id, question=row.question, scope=scope))
    if len(rows) > LIST_LIMIT:
        lines.append(t.render("faq.list_more", count=len(rows) - LIST_LIMIT))
    return "\n".join(lines)


async def _admin(event: Command, ctx: Context, command: str, needed: Role, action) -> Reply:  # noqa: ANN001
    """Run an admin sub-command: check the role, run it, and write the audit log either way."""
    t = ctx.templates
    role = await ctx.role()
    group = ctx.group_row.external_id if ctx.group_row else ""
    if role < needed:
        text = t.render("command.refused", name=command, role=t.raw(f"roles.{needed.label}"))
        result, detail = audit_store.REFUSED, f"caller is {role.label}"
    else:
        try:
            text, result = await action(), audit_store.OK
            detail = ctx.audit_detail or text
        except UsageError as exc:
            await _audit(ctx, event, command, audit_store.USAGE, str(exc), group)
            raise
        except PermissionError as exc:
            text, result, detail = str(exc), audit_store.REFUSED, str(exc)
    await _audit(ctx, event, command, result, detail, group)
    return Reply(text)


async def _audit(ctx: Context, event: Command, command: str, result: str, detail: str, group: str) -> None:
    async with ctx.db.session() as session:
        await audit_store.record(session, source="chat", channel=event.channel, group=group,
                                 actor=event.sender.user, command=command, args=event.args, result=result,
                                 detail=detail[:500], at=event.at)


def parse_entry(ctx: Context, rest: str) -> tuple[str, str, tuple[str, ...]]:
    """`问题 | 答案 | 别名1|别名2` → (question, answer, aliases); UsageError says what is missing."""
    t = ctx.templates
    parts = rest.replace("｜", "|").split("|")
    if len(parts) < 2:
        raise UsageError(t.raw("faq.problem_format"))
    question, answer = parts[0].strip(), parts[1].strip()
    aliases = split_aliases("|".join(parts[2:]))
    if not question_key(question):
        raise UsageError(t.raw("faq.problem_empty_question"))
    if not answer:
        raise UsageError(t.raw("faq.problem_empty_answer"))
    if len(question) > MAX_QUESTION:
        raise UsageError(t.render("faq.problem_question_too_long", limit=MAX_QUESTION))
    problem = check_entry(question, answer, aliases)
    if problem:
        raise UsageError(problem)
    return question, answer, aliases


async def _add(ctx: Context, rest: str, *, glob: bool) -> str:
    question, answer, aliases = parse_entry(ctx, rest)
    assert ctx.group_row is not None
    t = ctx.templates
    async with ctx.db.session() as session:
        saved = await store.save_entry(session, group_id=None if glob else ctx.group_row.id, question=question,
                                       question_key=question_key(question), answer=answer, aliases=aliases,
                                       by=ctx.sender)
    entry = saved.entry
    key = "faq.added" if saved.created else "faq.updated" if saved.changed else "faq.unchanged"
    return t.render(key, id=entry.id, question=entry.question,
                    aliases="、".join(entry.alias_list) or t.raw("faq.aliases_none"))


async def _remove(ctx: Context, rest: str) -> str:
    t = ctx.templates
    what = rest.strip()
    if not what:
        raise UsageError(t.raw("faq.problem_no_target"))
    assert ctx.group_row is not None
    async with ctx.db.session() as session:
        entry = await find_entry(session, ctx.group_row.id, what)  # type: ignore[arg-type]
        if entry is None:
            return t.render("faq.not_found", what=what)
        if entry.group_id is None and await ctx.role() < Role.BOT_ADMIN:
            raise PermissionError(t.render("faq.global_refused", question=entry.question))
        await store.remove_entry(session, entry)
    return t.render("faq.removed", id=entry.id, question=entry.question)


def scope_named(word: str) -> str | None:
    """The FAQ scope a word names (全部/本群/通用/关闭, all/both/group/global/off, any case), or None."""
    return SCOPE_WORDS.get(unicodedata.normalize("NFKC", word).strip().lower())


async def change_scope(session, group_id: int, scope: str) -> tuple[str, str | None]:  # noqa: ANN001 - AsyncSession
    """Set a group's FAQ scope (what 问答 范围 and `qunbot faq scope` call): (the previous scope, the audit
    detail "faq scope <old> -> <new>", None when nothing changed)."""
    old = await store.set_group_scope(session, group_id, scope)
    return old, (f"faq scope {old} -> {scope}" if old != scope else None)


async def render_scope(ctx: Context) -> str:
    """问答 范围: which entries answer in this group, and how to change it."""
    assert ctx.group_row is not None
    async with ctx.db.read_session() as session:
        scope = await store.group_scope(session, ctx.group_row.id)  # type: ignore[arg-type]
    t = ctx.templates
    return t.render("faq.scope_show", scope=t.raw(f"faq.scope_name_{scope}"))


async def _set_scope(ctx: Context, rest: str) -> str:
    t = ctx.templates
    scope = scope_named(rest)
    if scope is None:
        raise UsageError(t.render("faq.problem_unknown_scope", word=rest.strip()))
    assert ctx.group_row is not None
    async with ctx.db.session() as session:
        old, changed = await change_scope(session, ctx.group_row.id, scope)  # type: ignore[arg-type]
    ctx.audit_detail = changed or f"faq scope {scope} (unchanged)"
    name = t.raw(f"faq.scope_name_{scope}")
    if changed is None:
        return t.render("faq.scope_same", scope=name)
    return t.render("faq.scope_set", scope=name, old=t.raw(f"faq.scope_name_{old}"))


async def find_entry(session, group_id: int | None, what: str) -> FaqEntry | None:  # noqa: ANN001 - AsyncSession
    """An entry named by number ("12", "#12") or by its question, in the group's scope or the global one."""
    number = what.lstrip("#")
    if number.isdigit():
        entry = await store.get_entry(session, int(number))
        if entry is not None and entry.group_id in (group_id, None):
            return entry
        return None
    key = question_key(what)
    if group_id is not None:
        found = await store.find_by_key(session, group_id, key)
        if found is not None:
            return found
    return await store.find_by_key(session, None, key)


# -- CSV import (qunbot faq import and the console) -----------------------------------------------------

ADD, UPDATE, UNCHANGED = "add", "update", "unchanged"


@dataclass(frozen=True)
class ImportStep:
    """What importing one row does to a scope: add an entry, update the one with its question, or nothing."""

    row: FaqRow
    action: str
    before: FaqEntry | None = None


async def plan_import(session, group_id: int | None, rows: list[FaqRow]) -> list[ImportStep]:  # noqa: ANN001 - AsyncSession
    """What importing `rows` into a scope (None: the global entries) would change, writing nothing."""
    steps = []
    for row in rows:
        existing = await store.find_by_key(session, group_id, question_key(row.question))
        if existing is None:
            steps.append(ImportStep(row, ADD))
        elif (existing.question, existing.answer, existing.alias_list) == (row.question, row.answer, row.aliases):
            steps.append(ImportStep(row, UNCHANGED, existing))
        else:
            steps.append(ImportStep(row, UPDATE, existing))
    return steps


async def apply_import(session, group_id: int | None, rows: list[FaqRow], *, by: str) -> dict[str, int]:  # noqa: ANN001
    """Import rows into a scope (an entry with the same question is updated, not duplicated); counts by action."""
    counts = {ADD: 0, UPDATE: 0, UNCHANGED: 0}
    for row in rows:
        saved = await store.save_entry(session, group_id=group_id, question=row.question,
                                       question_key=question_key(row.question), answer=row.answer,
                                       aliases=row.aliases, by=by)
        counts[ADD if saved.created else UPDATE if saved.changed else UNCHANGED] += 1
    return counts
