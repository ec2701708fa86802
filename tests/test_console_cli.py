"""`qunbot console`: accounts made and changed from the command line, passwords from stdin, a prompt or an
environment variable (never an argument), every change audited, and the console honouring them."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

from sqlalchemy import select

from storage import console as console_store
from storage.audit import AuditEntry
from storage.console import ConsoleSession, ConsoleUser
from tests.conftest import make_config
from tests.console_helpers import PASSWORD, ConsoleClient
from tests.test_cli import ROOT, TIMEOUT, clean_env

NEW_PASSWORD = "another long passphrase"


def run_cli(db_url: str, monkeypatch, *args: str, stdin: str = "") -> int:
    from bot.cli import main

    monkeypatch.setenv("QUNBOT_DATABASE_URL", db_url)
    monkeypatch.setenv("QUNBOT_DATABASE_AUTO_MIGRATE", "false")
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(list(args))


async def cli(db_url: str, monkeypatch, *args: str, stdin: str = "") -> int:
    return await asyncio.to_thread(run_cli, db_url, monkeypatch, *args, stdin=stdin)


def test_an_operator_creates_the_first_account_with_the_password_on_stdin(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    env = clean_env(QUNBOT_DATABASE_URL=url)

    def qunbot(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", "console", *args], cwd=tmp_path, env=env, input=stdin,
                              capture_output=True, text=True, timeout=TIMEOUT, check=False)

    done = qunbot("create-user", "Admin", "--role", "ops_admin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert "created console user admin (ops_admin)" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    listed = qunbot("list-users")
    assert listed.returncode == 0 and listed.stdout.startswith("admin\tops_admin\tactive\t-\tlast login never")
    # A password is never a command-line argument.
    refused = qunbot("create-user", "eve", "--role", "ops_admin", "--password", PASSWORD)
    assert refused.returncode == 2 and "unrecognized arguments" in refused.stderr
    assert ROOT.exists()


async def test_create_user_checks_role_groups_and_password(db_url, monkeypatch, capsys, bot_factory):
    bot = await bot_factory(make_config(db_url))
    await bot.post_json("/api/simulator/joins", {"group": "g1", "users": [{"user": "u1", "name": "小明"}]})
    refusals = [
        (("create-user", "ops", "--role", "ops_admin"), "short", "at least 10 characters"),
        (("create-user", "ga", "--role", "group_admin"), PASSWORD, "needs at least one group"),
        (("create-user", "ga", "--role", "group_admin", "--group", "simulator:nope"), PASSWORD, "has not seen group 'nope'"),
        (("create-user", "ga", "--role", "group_admin", "--group", "g1"), PASSWORD, "CHANNEL:ID"),
        (("create-user", "ops", "--role", "ops_admin", "--group", "simulator:g1"), PASSWORD, "only for group_admin accounts"),
        (("create-user", "ops", "--role", "ops_admin", "--password-env", "QUNBOT_TEST_NOT_SET"), "", "is not set"),
        (("create-user", "two words", "--role", "ops_admin"), PASSWORD, "without spaces"),
    ]
    for args, stdin, message in refusals:
        assert await cli(db_url, monkeypatch, "console", *args, stdin=stdin + "\n") == 2, args
        assert message in capsys.readouterr().err, args
    async with bot.runtime.db.read_session() as session:
        assert (await session.execute(select(ConsoleUser))).first() is None

    monkeypatch.setenv("CONSOLE_PW", PASSWORD)
    assert await cli(db_url, monkeypatch, "console", "create-user", "ops", "--role", "ops_admin",
                     "--password-env", "CONSOLE_PW") == 0
    assert await cli(db_url, monkeypatch, "console", "create-user", "OPS", "--role", "ops_viewer",
                     stdin=PASSWORD + "\n") == 2
    assert "exists already" in capsys.readouterr().err
    assert await cli(db_url, monkeypatch, "console", "create-user", "ga", "--role", "group_admin", "--group",
                     "simulator:g1", "--group", "simulator:later", "--create-groups", stdin=PASSWORD + "\n") == 0
    capsys.readouterr()
    assert await cli(db_url, monkeypatch, "console", "list-users") == 0
    out = capsys.readouterr().out
    assert "ga\tgroup_admin\tactive\tsimulator:g1,simulator:later" in out and "ops\tops_admin\tactive\t-" in out

    c = ConsoleClient(bot.url("/"))
    try:
        status, me = await c.login("ga")
        assert status == 200 and [g["external_id"] for g in me["groups"]] == ["g1", "later"]
    finally:
        await c.close()


async def test_password_change_disable_and_groups_take_effect_at_once_and_are_audited(db_url, monkeypatch, capsys,
                                                                                       bot_factory):
    bot = await bot_factory(make_config(db_url))
    for group in ("g1", "g2"):
        await bot.post_json("/api/simulator/joins", {"group": group, "users": [{"user": "u1", "name": "小明"}]})
    assert await cli(db_url, monkeypatch, "console", "create-user", "ga", "--role", "group_admin",
                     "--group", "simulator:g1", stdin=PASSWORD + "\n") == 0
    c = ConsoleClient(bot.url("/"))
    try:
        assert (await c.login("ga"))[0] == 200
        assert await cli(db_url, monkeypatch, "console", "set-groups", "ga", "--group", "simulator:g2") == 0
        _, groups = await c.get("/console/api/groups")
        assert [g["group"]["external_id"] for g in groups["groups"]] == ["g2"]

        assert await cli(db_url, monkeypatch, "console", "set-password", "ga", stdin=NEW_PASSWORD + "\n") == 0
        assert (await c.get("/console/api/me"))[0] == 401  # logged out everywhere
        assert (await c.login("ga", PASSWORD))[0] == 401
        assert (await c.login("ga", NEW_PASSWORD))[0] == 200

        assert await cli(db_url, monkeypatch, "console", "disable-user", "ga") == 0
        assert (await c.get("/console/api/me"))[0] == 401
        assert (await c.login("ga", NEW_PASSWORD))[0] == 401
        async with bot.runtime.db.read_session() as session:
            assert (await session.execute(select(ConsoleSession))).first() is None
        assert await cli(db_url, monkeypatch, "console", "enable-user", "ga") == 0
        assert (await c.login("ga", NEW_PASSWORD))[0] == 200
        assert await cli(db_url, monkeypatch, "console", "set-password", "nobody", stdin=NEW_PASSWORD + "\n") == 2
        # Another role: a viewer sees every group at once (its groups are dropped); a group admin needs one.
        assert await cli(db_url, monkeypatch, "console", "set-role", "ga", "--role", "group_admin") == 2
        assert "needs at least one group" in capsys.readouterr().err
        assert await cli(db_url, monkeypatch, "console", "set-role", "ga", "--role", "ops_viewer") == 0
        status, me = await c.get("/console/api/me")
        assert status == 200 and (me["role"], me["groups"], me["can_write"]) == ("ops_viewer", None, False)
        assert await cli(db_url, monkeypatch, "console", "set-groups", "ga", "--group", "simulator:g1") == 2
        assert "only for group_admin accounts" in capsys.readouterr().err
    finally:
        await c.close()
    async with bot.runtime.db.read_session() as session:
        rows = (await session.execute(select(AuditEntry).where(AuditEntry.source == "cli")
                                      .order_by(AuditEntry.id))).scalars().all()
    assert [(r.command, r.args) for r in rows] == [
        ("console create-user", "ga role=group_admin groups=simulator:g1"),
        ("console set-groups", "ga groups=simulator:g2"),
        ("console set-password", "ga"),
        ("console disable-user", "ga"),
        ("console enable-user", "ga"),
        ("console set-role", "ga role=ops_viewer"),
    ]
    assert not any(PASSWORD in f"{r.args}{r.detail}" or NEW_PASSWORD in f"{r.args}{r.detail}" for r in rows)
    assert console_store.normalize_username(" GA ") == "ga"
