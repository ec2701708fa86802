"""The console's account routes (账号管理, ops admins only): list the accounts, create one with a password the
admin types, reset a password, disable and enable, change the role and a group admin's groups.

The domain code is `qunbot console`'s: storage.console (add_user, set_password, change_disabled, change_role,
change_groups: the same checks, the last active ops admin kept) and bot.console.auth (the password rules of
console.min_password_length, scrypt). A password reset and a disable end the account's sessions. Every change
is in the audit log with source "console", under the CLI's command names (console create-user …), never with
the password; refused changes are logged too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bot.console import auth
from bot.console import schema as s
from bot.console.api import GROUP_REF, api, group_ref, ts
from bot.console.routes import ADMIN, ApiError, ApiRequest
from storage import audit as audit_store
from storage import console as store
from storage.groups import Group

USER = s.obj({
    "id": s.integer(), "username": s.string(), "role": s.string(enum=list(store.ROLES)),
    "disabled": s.boolean(), "groups": s.array(GROUP_REF, "a group admin's groups (empty for the ops roles)"),
    "sessions": s.integer("sessions not expired yet (ended by a password reset or a disable)"),
    "created_at": s.timestamp(), "password_changed_at": s.timestamp(),
    "last_login_at": s.timestamp(nullable=True), "is_self": s.boolean("the account making the request"),
})
GROUP_IDS = s.array(s.integer(minimum=1), "the group ids (groups.id) a group admin may see and manage")
PASSWORD = s.string("typed by the admin; at least console.min_password_length characters, never stored or "
                    "logged in clear", min_length=1, max_length=1024)
# Which body field an AccountProblem is about, and its HTTP status (400 unless said).
PROBLEM_FIELD = {"bad_username": "username", "name_taken": "username", "bad_role": "role",
                 "groups_needed": "group_ids", "groups_not_allowed": "group_ids", "not_group_admin": "group_ids"}
PROBLEM_STATUS = {"name_taken": 409, "last_admin": 409, "no_user": 404}


async def user_json(req: ApiRequest, user_id: int) -> dict[str, Any]:
    async with req.db.read_session() as session:
        rows = await store.list_users(session)
        counts = await store.live_session_counts(session)
    for user, groups in rows:
        if user.id == user_id:
            return _user_json(req, user, groups, counts)
    raise ApiError(404, "not_found")


def _user_json(req: ApiRequest, user: store.ConsoleUser, groups: list[Group], counts: dict[int, int]) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "role": user.role, "disabled": user.disabled,
            "groups": [group_ref(g) for g in groups], "sessions": counts.get(user.id, 0),  # type: ignore[arg-type]
            "created_at": ts(user.created_at), "password_changed_at": ts(user.password_changed_at),
            "last_login_at": ts(user.last_login_at), "is_self": user.id == req.account.id}


async def _target(req: ApiRequest) -> store.ConsoleUser:
    async with req.db.read_session() as session:
        user = await session.get(store.ConsoleUser, req.params["user_id"])
    if user is None:
        raise ApiError(404, "not_found")
    return user


async def _groups(req: ApiRequest, ids: Sequence[int]) -> list[Group]:
    """The groups the ids name, in order; 400 naming the ids that name none."""
    async with req.db.read_session() as session:
        missing = await store.missing_groups(session, ids)
        found = {g.id: g for g in [await session.get(Group, gid) for gid in sorted(set(ids))] if g is not None}
    if missing:
        raise ApiError(400, "unknown_group", ", ".join(str(m) for m in missing), field="group_ids")
    return [found[gid] for gid in sorted(found)]


def _groups_text(groups: list[Group]) -> str:
    return f" groups={','.join(f'{g.channel}:{g.external_id}' for g in groups)}" if groups else ""


async def _refused(req: ApiRequest, command: str, args: str, exc: store.AccountProblem) -> ApiError:
    """Log a refused change and make its answer (the Chinese text of console.error.<code>)."""
    result = audit_store.REFUSED if exc.code == "last_admin" else audit_store.USAGE
    await req.audit(command, args=args, result=result, detail=str(exc))
    return ApiError(PROBLEM_STATUS.get(exc.code, 400), exc.code, field=PROBLEM_FIELD.get(exc.code))


async def _password_hash(req: ApiRequest, password: str, command: str, username: str) -> str:
    broken = auth.password_rule_broken(password, req.console.config)
    if broken is not None:
        await req.audit(command, args=username, result=audit_store.USAGE, detail=broken)
        min_length = req.console.config.min_password_length
        raise ApiError(400, broken, req.console.text("users.password_rule", min=min_length), field="password")
    return await asyncio.to_thread(auth.hash_password, password)


async def _audit(session, req: ApiRequest, command: str, args: str, detail: str = "") -> None:  # noqa: ANN001
    """The audit entry of a change, in the change's own transaction."""
    await audit_store.record(session, source="console", actor=req.account.username, command=command,
                             result=audit_store.OK, args=args, detail=detail)


@api.route("GET", "/users", summary="Console accounts with their role, groups, state and sessions", access=ADMIN,
           tag="users", response=s.obj({"users": s.array(USER), "roles": s.array(s.string(enum=list(store.ROLES))),
                                        "min_password_length": s.integer()}))
async def list_users(req: ApiRequest) -> dict[str, Any]:
    async with req.db.read_session() as session:
        rows = await store.list_users(session)
        counts = await store.live_session_counts(session)
    return {"users": [_user_json(req, user, groups, counts) for user, groups in rows], "roles": list(store.ROLES),
            "min_password_length": req.console.config.min_password_length}


@api.route("POST", "/users", summary="Create a console account", access=ADMIN, tag="users",
           body=s.obj({"username": s.string("login name, case-insensitive, no spaces", min_length=1, max_length=64),
                       "role": s.string(enum=list(store.ROLES)), "password": PASSWORD, "group_ids": GROUP_IDS},
                      required=["username", "role", "password"]),
           response=USER,
           description="As `qunbot console create-user`: 400 names the field (username, role, group_ids, "
                       "password), 409 when the name is taken. There is no default password.")
async def create_user(req: ApiRequest) -> dict[str, Any]:
    body = req.body
    groups = await _groups(req, body.get("group_ids") or [])
    args = f"{store.normalize_username(body['username'])} role={body['role']}{_groups_text(groups)}"
    try:
        name = store.check_username(body["username"])
        store.check_access(body["role"], len(groups))
    except store.AccountProblem as exc:
        raise await _refused(req, "console create-user", args, exc) from None
    password_hash = await _password_hash(req, body["password"], "console create-user", name)
    try:
        async with req.db.session() as session:
            user = await store.add_user(session, username=name, password_hash=password_hash, role=body["role"],
                                        group_ids=[g.id for g in groups])  # type: ignore[misc]
            await _audit(session, req, "console create-user", args)
    except store.AccountProblem as exc:
        raise await _refused(req, "console create-user", args, exc) from None
    return await user_json(req, user.id)  # type: ignore[arg-type]


@api.route("POST", "/users/{user_id}/password", summary="Set an account's password (ends all its sessions)",
           access=ADMIN, tag="users", body=s.obj({"password": PASSWORD}), response=USER,
           description="As `qunbot console set-password`. Your own password too: you are logged out then.")
async def set_password(req: ApiRequest) -> dict[str, Any]:
    user = await _target(req)
    password_hash = await _password_hash(req, req.body["password"], "console set-password", user.username)
    async with req.db.session() as session:
        await store.set_password(session, user.id, password_hash)  # type: ignore[arg-type]
        await _audit(session, req, "console set-password", user.username, "sessions ended")
    return await user_json(req, user.id)  # type: ignore[arg-type]


async def _switch(req: ApiRequest, disable: bool) -> dict[str, Any]:
    user = await _target(req)
    command = "console disable-user" if disable else "console enable-user"
    try:
        async with req.db.session() as session:
            changed = await store.change_disabled(session, user.id, disable)  # type: ignore[arg-type]
            await _audit(session, req, command, user.username,
                         ("sessions ended" if disable else "") if changed else "unchanged")
    except store.AccountProblem as exc:
        raise await _refused(req, command, user.username, exc) from None
    return await user_json(req, user.id)  # type: ignore[arg-type]


@api.route("POST", "/users/{user_id}/disable", summary="Disable an account (ends all its sessions)", access=ADMIN,
           tag="users", response=USER,
           description="As `qunbot console disable-user`; 409 for the last active ops admin (nobody could manage "
                       "the console any more).")
async def disable_user(req: ApiRequest) -> dict[str, Any]:
    return await _switch(req, True)


@api.route("POST", "/users/{user_id}/enable", summary="Enable a disabled account", access=ADMIN, tag="users",
           response=USER, description="As `qunbot console enable-user`.")
async def enable_user(req: ApiRequest) -> dict[str, Any]:
    return await _switch(req, False)


@api.route("PUT", "/users/{user_id}/role", summary="Change an account's role (and a group admin's groups)",
           access=ADMIN, tag="users", body=s.obj({"role": s.string(enum=list(store.ROLES)), "group_ids": GROUP_IDS},
                                                 required=["role"]),
           response=USER,
           description="As `qunbot console set-role`: a group admin needs group_ids, the ops roles take none; 409 "
                       "for the last active ops admin.")
async def set_role(req: ApiRequest) -> dict[str, Any]:
    user = await _target(req)
    groups = await _groups(req, req.body.get("group_ids") or [])
    role = req.body["role"]
    args = f"{user.username} role={role}{_groups_text(groups)}"
    try:
        async with req.db.session() as session:
            old = await store.change_role(session, user.id, role, [g.id for g in groups])  # type: ignore[arg-type,misc]
            await _audit(session, req, "console set-role", args, f"role {old} -> {role}")
    except store.AccountProblem as exc:
        raise await _refused(req, "console set-role", args, exc) from None
    return await user_json(req, user.id)  # type: ignore[arg-type]


@api.route("PUT", "/users/{user_id}/groups", summary="Replace a group admin's groups", access=ADMIN, tag="users",
           body=s.obj({"group_ids": GROUP_IDS}), response=USER,
           description="As `qunbot console set-groups`: at least one group; 400 for an ops account.")
async def set_groups(req: ApiRequest) -> dict[str, Any]:
    user = await _target(req)
    groups = await _groups(req, req.body["group_ids"])
    args = f"{user.username}{_groups_text(groups)}"
    try:
        async with req.db.session() as session:
            await store.change_groups(session, user.id, [g.id for g in groups])  # type: ignore[arg-type,misc]
            await _audit(session, req, "console set-groups", args)
    except store.AccountProblem as exc:
        raise await _refused(req, "console set-groups", args, exc) from None
    return await user_json(req, user.id)  # type: ignore[arg-type]
