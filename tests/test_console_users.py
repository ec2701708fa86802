"""账号管理 in the console (real sockets, SQLite and PostgreSQL): an ops admin creates accounts with a password
they type (the CLI's rules), resets passwords, disables and enables, changes roles and a group admin's groups;
each change takes effect at once (sessions end), is in the audit log without the password, and the last
active ops admin cannot be disabled or demoted, not even by two admins at once."""

from __future__ import annotations

import asyncio
import io

from sqlalchemy import select

from storage import console as console_store
from storage.audit import AuditEntry
from storage.console import ConsoleSession, ConsoleUser
from tests.console_helpers import PASSWORD, ConsoleClient, group_id, logged_in, seed_simulator

NEW_PASSWORD = "a new long passphrase"


async def send(client: ConsoleClient, method: str, path: str, body=None) -> tuple[int, dict]:
    status, data, _ = await client.request(method, path, body)
    return status, data


async def users(client: ConsoleClient) -> dict[str, dict]:
    status, data = await client.get("/console/api/users")
    assert status == 200, data
    return {u["username"]: u for u in data["users"]}


async def console_audit(bot) -> list[tuple[str, str, str, str]]:
    async with bot.runtime.db.read_session() as session:
        rows = (await session.execute(select(AuditEntry).where(AuditEntry.source == "console",
                                                               AuditEntry.command != "console login")
                                      .order_by(AuditEntry.id))).scalars().all()
    return [(r.command, r.args, r.result, r.detail) for r in rows]


async def test_an_ops_admin_creates_and_changes_accounts_and_each_change_takes_effect(bot):
    await seed_simulator(bot, "g1")
    await seed_simulator(bot, "g2")
    g1, g2 = await group_id(bot, "g1"), await group_id(bot, "g2")
    ops = await logged_in(bot, "ops", console_store.OPS_ADMIN)
    zhang = ConsoleClient(bot.url("/"))
    try:
        listed = await users(ops)
        assert list(listed) == ["ops"] and listed["ops"]["is_self"] and listed["ops"]["sessions"] == 1
        # Refused, each naming its field, and nothing is created: the CLI's rules (no default password).
        new = {"username": "zhang", "role": "group_admin", "password": PASSWORD, "group_ids": [g1]}
        for body, status, code, field in (
                ({**new, "password": "short"}, 400, "password_short", "password"),
                ({**new, "password": " " + PASSWORD}, 400, "password_spaces", "password"),
                ({**new, "username": "two words"}, 400, "bad_username", "username"),
                ({**new, "group_ids": []}, 400, "groups_needed", "group_ids"),
                ({**new, "role": "ops_viewer"}, 400, "groups_not_allowed", "group_ids"),
                ({**new, "group_ids": [g1, 4242]}, 400, "unknown_group", "group_ids"),
                ({**new, "username": "OPS", "role": "ops_admin", "group_ids": []}, 409, "name_taken", "username"),
                ({k: v for k, v in new.items() if k != "password"}, 400, "bad_request", "password")):
            got, data = await send(ops, "POST", "/console/api/users", body)
            assert (got, data["error"], data.get("field")) == (status, code, field), (body, data)
            assert data["message"]
        _, short = await send(ops, "POST", "/console/api/users", {**new, "password": "short"})
        assert short["message"] == "密码太短：至少 10 个字符，首尾不能有空格"
        assert list(await users(ops)) == ["ops"]

        status, made = await send(ops, "POST", "/console/api/users", {**new, "username": " Zhang "})
        assert status == 200, made
        assert (made["username"], made["role"], made["disabled"], made["is_self"]) == ("zhang", "group_admin", False, False)
        assert [g["external_id"] for g in made["groups"]] == ["g1"]
        status, me = await zhang.login("zhang")
        assert status == 200 and [g["external_id"] for g in me["groups"]] == ["g1"]
        assert (await users(ops))["zhang"]["sessions"] == 1

        # Groups: now g2 only, at once.
        status, changed = await send(ops, "PUT", f"/console/api/users/{made['id']}/groups", {"group_ids": [g2]})
        assert status == 200 and [g["external_id"] for g in changed["groups"]] == ["g2"]
        _, seen = await zhang.get("/console/api/groups")
        assert [g["group"]["external_id"] for g in seen["groups"]] == ["g2"]

        # A password reset ends every session; the old password no longer works.
        status, reset = await send(ops, "POST", f"/console/api/users/{made['id']}/password", {"password": NEW_PASSWORD})
        assert status == 200 and reset["sessions"] == 0
        assert (await zhang.get("/console/api/me"))[0] == 401
        assert (await zhang.login("zhang", PASSWORD))[0] == 401
        assert (await zhang.login("zhang", NEW_PASSWORD))[0] == 200

        # Role: a viewer sees every group and changes nothing; groups are for group admins only.
        status, data = await send(ops, "PUT", f"/console/api/users/{made['id']}/role", {"role": "group_admin"})
        assert (status, data["error"]) == (400, "groups_needed")
        status, viewer = await send(ops, "PUT", f"/console/api/users/{made['id']}/role", {"role": "ops_viewer"})
        assert status == 200 and (viewer["role"], viewer["groups"]) == ("ops_viewer", [])
        _, seen = await zhang.get("/console/api/groups")
        assert {g["group"]["external_id"] for g in seen["groups"]} == {"g1", "g2"}
        status, data = await zhang.patch(f"/console/api/groups/{g1}/settings", {"faq_scope": "off"})
        assert (status, data["error"]) == (403, "read_only")
        status, data = await send(ops, "PUT", f"/console/api/users/{made['id']}/groups", {"group_ids": [g1]})
        assert (status, data["error"]) == (400, "not_group_admin")

        # Disable: logged out at once and cannot log in; enable: can again.
        status, off = await send(ops, "POST", f"/console/api/users/{made['id']}/disable")
        assert status == 200 and off["disabled"] is True and off["sessions"] == 0
        assert (await zhang.get("/console/api/me"))[0] == 401
        assert (await zhang.login("zhang", NEW_PASSWORD))[0] == 401
        async with bot.runtime.db.read_session() as session:
            assert (await session.execute(select(ConsoleSession).join(
                ConsoleUser, ConsoleUser.id == ConsoleSession.user_id).where(ConsoleUser.username == "zhang"))).first() is None
        status, on = await send(ops, "POST", f"/console/api/users/{made['id']}/enable")
        assert status == 200 and on["disabled"] is False
        assert (await zhang.login("zhang", NEW_PASSWORD))[0] == 200
        assert (await send(ops, "POST", "/console/api/users/4242/disable"))[0] == 404
    finally:
        await ops.close()
        await zhang.close()

    entries = await console_audit(bot)
    assert [(c, a, r) for c, a, r, _ in entries if r == "ok"] == [
        ("console create-user", "zhang role=group_admin groups=simulator:g1", "ok"),
        ("console set-groups", "zhang groups=simulator:g2", "ok"),
        ("console set-password", "zhang", "ok"),
        ("console set-role", "zhang role=ops_viewer", "ok"),
        ("console disable-user", "zhang", "ok"),
        ("console enable-user", "zhang", "ok"),
    ]
    refused = [(c, r) for c, _, r, _ in entries if r != "ok"]
    assert ("console create-user", "usage") in refused and ("console set-role", "usage") in refused
    assert not any(PASSWORD in f"{a} {d}" or NEW_PASSWORD in f"{a} {d}" or "short" in a for _, a, _, d in entries)


async def test_the_last_active_ops_admin_cannot_be_disabled_or_demoted(bot, db_url, monkeypatch, capsys):
    ops = await logged_in(bot, "ops", console_store.OPS_ADMIN)
    try:
        me = (await users(ops))["ops"]
        for method, path, body in (("POST", f"/console/api/users/{me['id']}/disable", None),
                                   ("PUT", f"/console/api/users/{me['id']}/role", {"role": "ops_viewer"})):
            status, data = await send(ops, method, path, body)
            assert (status, data["error"]) == (409, "last_admin"), data
            assert "最后一个" in data["message"]
        assert (await ops.get("/console/api/me"))[0] == 200  # still logged in, still an admin
        assert [(c, r) for c, _, r, _ in await console_audit(bot)] == [("console disable-user", "refused"),
                                                                       ("console set-role", "refused")]
        # The command line keeps them too (it calls the same code).
        from bot.cli import main

        monkeypatch.setenv("QUNBOT_DATABASE_URL", db_url)
        monkeypatch.setenv("QUNBOT_DATABASE_AUTO_MIGRATE", "false")
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        assert await asyncio.to_thread(main, ["console", "disable-user", "ops"]) == 2
        assert "last active ops_admin" in capsys.readouterr().err
        assert await asyncio.to_thread(main, ["console", "set-role", "ops", "--role", "ops_viewer"]) == 2

        # With a second admin, either may step down, but never both: two demotions at once leave one admin.
        status, other = await send(ops, "POST", "/console/api/users", {"username": "li", "role": "ops_admin",
                                                                       "password": PASSWORD})
        assert status == 200
        li = ConsoleClient(bot.url("/"))
        try:
            assert (await li.login("li"))[0] == 200
            results = await asyncio.gather(
                send(ops, "PUT", f"/console/api/users/{me['id']}/role", {"role": "ops_viewer"}),
                send(li, "PUT", f"/console/api/users/{other['id']}/role", {"role": "ops_viewer"}))
            assert sorted(status for status, _ in results) == [200, 409], results
        finally:
            await li.close()
        async with bot.runtime.db.read_session() as session:
            admins = (await session.execute(select(ConsoleUser.username).where(
                ConsoleUser.role == console_store.OPS_ADMIN))).scalars().all()
        assert len(admins) == 1
    finally:
        await ops.close()
