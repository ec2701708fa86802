"""The console's FAQ routes: search, add, edit and delete entries (a group's own, or the global ones for ops
admins), CSV import with a dry-run preview and export, and the unanswered questions with "make this an FAQ".

Everything goes through the FAQ's domain code: storage.faq (save_entry, update_entry, remove_entry,
find_entries, unanswered_clusters), handlers.faq (plan_import, apply_import, the same as `qunbot faq import`)
and handlers.faq.transfer (CSV reading and writing, the entry checks the chat command and the CLI use).
Changing an entry bumps its scope's revision, so every process rebuilds its index before the next question.
"""

from __future__ import annotations

from typing import Any

from bot.console import schema as s
from bot.console.api import GROUP_REF, PAGING, api, group_ref, ts
from bot.console.routes import WRITE, ApiError, ApiRequest, Param
from handlers.faq import ADD, UNCHANGED, UPDATE, apply_import, plan_import
from handlers.faq.index import question_key
from handlers.faq.transfer import (
    MAX_ALIAS,
    MAX_QUESTION,
    CsvProblem,
    entry_problem,
    parse_csv,
    split_aliases,
    write_csv,
)
from storage import faq as store
from storage.console import OPS_ADMIN
from storage.faq import FaqEntry
from storage.groups import Group

MAX_ANSWER = 4000
MAX_CSV = 200_000
# A problem's field in the entry form.
FIELD_OF = {"empty_question": "question", "no_words": "question", "question_too_long": "question",
            "empty_answer": "answer", "alias_too_long": "aliases"}

ENTRY = s.obj({
    "id": s.integer(),
    "group": s.nullable(GROUP_REF) | {"description": "the group whose own entry it is; null: a global entry"},
    "question": s.string(),
    "answer": s.string(),
    "aliases": s.array(s.string(), "other ways members ask it"),
    "updated_by": s.string("who wrote it last: a user id (chat), cli:<user>, console:<account>"),
    "updated_at": s.timestamp(),
    "can_write": s.boolean("this account may change it"),
})
ENTRY_BODY = {
    "question": s.string(min_length=1, max_length=MAX_QUESTION),
    "answer": s.string(min_length=1, max_length=MAX_ANSWER),
    "aliases": s.array(s.string(max_length=MAX_ALIAS), "other ways to ask it"),
}
CLUSTER = s.obj({
    "id": s.integer(), "group": GROUP_REF,
    "sample": s.string("the latest wording, as a member wrote it"),
    "cluster_key": s.string("the meaningful words the cluster is grouped by"),
    "count": s.integer("how often it was asked"), "first_seen": s.timestamp(), "last_seen": s.timestamp(),
})
SAVED = s.obj({"entry": ENTRY, "result": s.string(enum=["added", "updated", "unchanged"])})


def _can_write(req: ApiRequest, group_id: int | None) -> bool:
    if not req.account.can_write:
        return False
    return req.account.role == OPS_ADMIN if group_id is None else req.account.sees_group(group_id)


def entry_json(req: ApiRequest, entry: FaqEntry, group: Group | None) -> dict[str, Any]:
    return {"id": entry.id, "group": group_ref(group) if group is not None else None, "question": entry.question,
            "answer": entry.answer, "aliases": list(entry.alias_list), "updated_by": entry.updated_by,
            "updated_at": ts(entry.updated_at), "can_write": _can_write(req, entry.group_id)}


async def _scope(req: ApiRequest, group_id: int | None) -> Group | None:
    """The scope to change: a group this account may change, or the global entries (ops admins only)."""
    if group_id is None:
        if not req.account.can_write:
            raise ApiError(403, "read_only")
        if req.account.role != OPS_ADMIN:
            raise ApiError(403, "global_faq")
        return None
    return await req.group(group_id, write=True)


def _checked(req: ApiRequest, body: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    question, answer = body["question"].strip(), body["answer"].strip()
    aliases = split_aliases("|".join(body.get("aliases") or []))
    problem = entry_problem(question, answer, aliases)
    if problem is not None:
        code, _ = problem
        raise ApiError(400, "bad_faq", req.console.text(f"faq.problem_{code}"), field=FIELD_OF[code])
    return question, answer, aliases


async def _entry(req: ApiRequest, entry_id: int) -> tuple[FaqEntry, Group | None]:
    async with req.db.read_session() as session:
        entry = await store.get_entry(session, entry_id)
    if entry is None:
        raise ApiError(404, "not_found")
    group = await req.group(entry.group_id) if entry.group_id is not None else None
    return entry, group


def _by(req: ApiRequest) -> str:
    return f"console:{req.account.username}"


@api.route("GET", "/faq", summary="FAQ entries: search the global ones and the groups' own", tag="faq",
           params=[Param("scope", s.string("all: global and the groups' own; global; group: the groups' own only",
                                           enum=["all", "global", "group"]) | {"default": "all"}),
                   Param("group", s.integer("only this group's own entries (and the global ones with scope=all)",
                                            minimum=1)),
                   Param("q", s.string("search in question, answer and aliases", max_length=100)), *PAGING],
           response=s.obj({"entries": s.array(ENTRY), "total": s.integer(), "page": s.integer(),
                           "per_page": s.integer(),
                           "can_write_global": s.boolean("this account may change the global entries")}))
async def list_faq(req: ApiRequest) -> dict[str, Any]:
    p = req.params
    group = await req.group(p["group"]) if p["group"] else None
    ids = frozenset({group.id}) if group is not None else req.visible_group_ids
    if p["scope"] == "global":
        ids = frozenset()
    page, per_page = p["page"], p["per_page"]
    async with req.db.read_session() as session:
        rows, total = await store.find_entries(session, group_ids=ids, include_global=p["scope"] != "group",  # type: ignore[arg-type]
                                               search=p["q"] or "", offset=(page - 1) * per_page, limit=per_page)
    return {"entries": [entry_json(req, e, g) for e, g in rows], "total": total, "page": page, "per_page": per_page,
            "can_write_global": _can_write(req, None)}


@api.route("POST", "/faq", summary="Add an FAQ entry (or update the one with the same question)", access=WRITE,
           tag="faq",
           body=s.obj({"group_id": s.integer("the group's own entry; null: a global entry (ops admins)",
                                             minimum=1, nullable=True), **ENTRY_BODY,
                       "from_unanswered": s.integer("an unanswered-question cluster this entry answers: it is "
                                                    "removed from the list", minimum=1, nullable=True)},
                      required=["group_id", "question", "answer"]),
           response=SAVED,
           description="Like 问答 添加 in chat: an entry with the same question in that scope is updated. The "
                       "group's (or every group's) index picks it up before the next question.")
async def add_faq(req: ApiRequest) -> dict[str, Any]:
    body = req.body
    group = await _scope(req, body["group_id"])
    question, answer, aliases = _checked(req, body)
    cluster_id = body.get("from_unanswered")
    async with req.db.session() as session:
        if cluster_id is not None:
            cluster = await store.get_unanswered(session, cluster_id)
            if cluster is None or not req.account.sees_group(cluster.group_id):
                raise ApiError(400, "bad_request", "from_unanswered: no such question", field="from_unanswered")
            if group is not None and cluster.group_id != group.id:
                raise ApiError(400, "bad_request", "from_unanswered: asked in another group", field="from_unanswered")
        saved = await store.save_entry(session, group_id=group.id if group else None, question=question,
                                       question_key=question_key(question), answer=answer, aliases=aliases,
                                       by=_by(req))
        if cluster_id is not None:
            await store.remove_unanswered(session, cluster_id)
    result = "added" if saved.created else "updated" if saved.changed else "unchanged"
    where = "global" if group is None else "group"
    await req.audit("faq add", group=group, args=question,
                    detail=f"{result} #{saved.entry.id} {question} ({where})"
                           + (f", answers unanswered #{cluster_id}" if cluster_id else ""))
    return {"entry": entry_json(req, saved.entry, group), "result": result}


@api.route("PUT", "/faq/{entry_id}", summary="Edit an FAQ entry", access=WRITE, tag="faq",
           body=s.obj(ENTRY_BODY, required=["question", "answer"]), response=SAVED,
           description="The entry keeps its scope. 400 (field question) when another entry of the scope already "
                       "has the new question.")
async def edit_faq(req: ApiRequest) -> dict[str, Any]:
    entry, group = await _entry(req, req.params["entry_id"])
    await _scope(req, entry.group_id)
    question, answer, aliases = _checked(req, req.body)
    async with req.db.session() as session:
        fresh = await store.get_entry(session, entry.id)  # type: ignore[arg-type]
        if fresh is None:
            raise ApiError(404, "not_found")
        before = fresh.question
        try:
            changed = await store.update_entry(session, fresh, question=question, question_key=question_key(question),
                                               answer=answer, aliases=aliases, by=_by(req))
        except store.DuplicateQuestion as exc:
            raise ApiError(400, "bad_faq", req.console.text("faq.problem_duplicate", id=exc.other.id),
                           field="question") from None
    if changed:
        renamed = f" (was {before})" if before != question else ""
        await req.audit("faq update", group=group, args=question, detail=f"updated #{fresh.id} {question}{renamed}")
    return {"entry": entry_json(req, fresh, group), "result": "updated" if changed else "unchanged"}


@api.route("DELETE", "/faq/{entry_id}", summary="Delete an FAQ entry", access=WRITE, tag="faq",
           response=s.obj({"ok": s.boolean()}))
async def delete_faq(req: ApiRequest) -> dict[str, Any]:
    entry, group = await _entry(req, req.params["entry_id"])
    await _scope(req, entry.group_id)
    async with req.db.session() as session:
        fresh = await store.get_entry(session, entry.id)  # type: ignore[arg-type]
        if fresh is None:
            raise ApiError(404, "not_found")
        await store.remove_entry(session, fresh)
    await req.audit("faq remove", group=group, args=str(entry.id), detail=f"removed #{entry.id} {entry.question}")
    return {"ok": True}


@api.route("GET", "/faq/export", summary="A scope's entries as CSV (the format the import reads)", tag="faq",
           params=[Param("group", s.integer("this group's own entries; without it the global ones", minimum=1))],
           response=s.obj({"filename": s.string(), "count": s.integer(),
                           "csv": s.string("header question,answer,aliases; aliases |-separated; UTF-8")}))
async def export_faq(req: ApiRequest) -> dict[str, Any]:
    group = await req.group(req.params["group"]) if req.params["group"] else None
    async with req.db.read_session() as session:
        rows = await store.entries_in_scope(session, group.id if group else None)
    name = f"faq-{group.channel}-{group.external_id}.csv" if group else "faq-global.csv"
    return {"filename": name.replace("/", "_"), "count": len(rows),
            "csv": write_csv((r.question, r.answer, r.alias_list) for r in rows)}


@api.route("POST", "/faq/import", summary="Import FAQ entries from CSV, or preview what an import would change",
           access=WRITE, tag="faq",
           body=s.obj({"group_id": s.integer("into this group's own entries; null: the global ones (ops admins)",
                                             minimum=1, nullable=True),
                       "csv": s.string("the file's text: header question,answer[,aliases]", max_length=MAX_CSV),
                       "dry_run": s.boolean("only say what would change")},
                      required=["group_id", "csv"]),
           response=s.obj({
               "dry_run": s.boolean(), "imported": s.boolean("the entries were written"),
               "counts": s.obj({ADD: s.integer(), UPDATE: s.integer(), UNCHANGED: s.integer()}),
               "steps": s.array(s.obj({"line": s.integer(), "question": s.string(),
                                       "action": s.string(enum=[ADD, UPDATE, UNCHANGED]),
                                       "before": s.string("the answer it replaces (update)", nullable=True)})),
               "problems": s.array(s.obj({"line": s.integer(), "code": s.string(), "message": s.string()}),
                                   "bad lines; an import with any is refused (nothing written)"),
           }),
           description="Same rules as `qunbot faq import`: an entry with the same question is updated, not "
                       "duplicated; a file with any bad line imports nothing (dry_run names every bad line).")
async def import_faq(req: ApiRequest) -> dict[str, Any]:
    body = req.body
    group = await _scope(req, body["group_id"])
    dry_run = bool(body.get("dry_run"))
    try:
        rows, problems = parse_csv(body["csv"])
    except CsvProblem as exc:
        raise ApiError(400, "bad_csv", req.console.text(f"faq.csv_{exc.code}"), field="csv") from None
    problem_json = [{"line": p.line, "code": p.code,
                     "message": req.console.text(f"faq.csv_{p.code}", line=p.line, **dict(p.values))}
                    for p in problems]
    if problems and not dry_run:
        lines = "；".join(x["message"] for x in problem_json[:5])
        raise ApiError(400, "bad_csv", lines, field="csv")
    group_id = group.id if group else None
    if dry_run:
        async with req.db.read_session() as session:
            steps = await plan_import(session, group_id, rows)
        counts = {action: sum(step.action == action for step in steps) for action in (ADD, UPDATE, UNCHANGED)}
    else:
        async with req.db.session() as session:
            steps = await plan_import(session, group_id, rows)
            counts = await apply_import(session, group_id, rows, by=_by(req))
        await req.audit("faq import", group=group, args=f"{len(rows)} rows",
                        detail=f"{counts[ADD]} added, {counts[UPDATE]} updated, {counts[UNCHANGED]} unchanged "
                               f"({'global entries' if group is None else 'group'})")
    return {"dry_run": dry_run, "imported": not dry_run, "counts": counts, "problems": problem_json,
            "steps": [{"line": st.row.line, "question": st.row.question, "action": st.action,
                       "before": st.before.answer if st.before is not None and st.action == UPDATE else None}
                      for st in steps]}


@api.route("GET", "/faq/unanswered", summary="Questions the bot could not answer, grouped, most asked first",
           tag="faq",
           params=[Param("group", s.integer("only this group", minimum=1)),
                   Param("limit", s.integer(minimum=1, maximum=200) | {"default": 50})],
           response=s.obj({"clusters": s.array(CLUSTER)}))
async def list_unanswered(req: ApiRequest) -> dict[str, Any]:
    group = await req.group(req.params["group"]) if req.params["group"] else None
    async with req.db.read_session() as session:
        rows = await store.unanswered_clusters(session, group_ids=req.visible_group_ids,
                                               group_id=group.id if group else None, limit=req.params["limit"])
    return {"clusters": [{"id": c.id, "group": group_ref(g), "sample": c.sample, "cluster_key": c.cluster_key,
                          "count": c.count, "first_seen": ts(c.first_seen), "last_seen": ts(c.last_seen)}
                         for c, g in rows]}


@api.route("DELETE", "/faq/unanswered/{cluster_id}", summary="Dismiss an unanswered question", access=WRITE,
           tag="faq", response=s.obj({"ok": s.boolean()}),
           description="It leaves the list; asked again without an answer, it comes back with a new count.")
async def dismiss_unanswered(req: ApiRequest) -> dict[str, Any]:
    async with req.db.read_session() as session:
        cluster = await store.get_unanswered(session, req.params["cluster_id"])
    if cluster is None:
        raise ApiError(404, "not_found")
    group = await req.group(cluster.group_id, write=True)
    async with req.db.session() as session:
        await store.remove_unanswered(session, cluster.id)  # type: ignore[arg-type]
    await req.audit("faq unanswered dismiss", group=group, args=cluster.sample,
                    detail=f"dismissed unanswered #{cluster.id} ({cluster.count}x) {cluster.sample}")
    return {"ok": True}
