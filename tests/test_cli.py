"""The `qunbot` command, run as a real process (`python -m bot`) in an empty directory."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_config, redacted

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # seconds; a hung command fails the test instead of hanging the suite
# No proxy for 127.0.0.1, whatever the environment says.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(\S+) (.*)$")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any QUNBOT_* variable, plus `extra`; imports this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUNBOT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def qunbot(cwd: Path, *args: str, timeout: float = TIMEOUT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(method: str, url: str, data: Any = None) -> tuple[int, Any]:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with HTTP.open(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def tables(path: Path) -> tuple[set[str], list[str]]:
    conn = sqlite3.connect(path)
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")] \
            if "alembic_version" in names else []
    finally:
        conn.close()
    return names, versions


def test_help_lists_the_commands(tmp_path):
    result = qunbot(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "db", "config"):
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.MULTILINE), result.stdout


# --- config check -----------------------------------------------------------------------------------------


def test_config_check_prints_the_effective_config(tmp_path):
    result = qunbot(tmp_path, "config", "check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == redacted(load_config(None, environ={}))

    (tmp_path / "my.toml").write_text('[server]\nport = 9001\n[log]\nlevel = "warning"\n', encoding="utf-8")
    result = qunbot(tmp_path, "-c", "my.toml", "config", "check", QUNBOT_SIMULATOR_ENABLED="false")
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["server"]["port"] == 9001
    assert effective["log"]["level"] == "WARNING"
    assert effective["simulator"]["enabled"] is False

    result = qunbot(tmp_path, "config", "check", "--quiet", QUNBOT_CONFIG="my.toml")
    assert (result.returncode, result.stdout) == (0, "")


def test_config_check_masks_secrets(tmp_path):
    secrets = {"QUNBOT_WECOM_TOKEN": "tok-0123456789", "QUNBOT_WECOM_ENCODING_AES_KEY": "K" * 43,
               "QUNBOT_WECOM_CORP_SECRET": "corp-secret-0123456789"}
    result = qunbot(tmp_path, "config", "check", QUNBOT_WECOM_ENABLED="true", QUNBOT_WECOM_CORP_ID="ww1", **secrets)
    assert result.returncode == 0, result.stderr
    wecom = json.loads(result.stdout)["wecom"]
    assert (wecom["enabled"], wecom["token"], wecom["encoding_aes_key"], wecom["corp_secret"]) == \
        (True, "***", "***", "***")
    for value in secrets.values():
        assert value not in result.stdout and value not in result.stderr


def test_config_check_rejects_an_invalid_config_in_one_line(tmp_path):
    result = qunbot(tmp_path, "config", "check", QUNBOT_SERVER_PORT="0")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "server.port" in lines[0] and "QUNBOT_SERVER_PORT" in lines[0]


def test_config_errors_from_file_and_environment(tmp_path):
    (tmp_path / "bad.toml").write_text("[server]\nprot = 1\n", encoding="utf-8")
    result = qunbot(tmp_path, "-c", "bad.toml", "config", "check")
    assert result.returncode == 2
    assert "server.prot" in result.stderr and "bad.toml" in result.stderr
    assert "Traceback" not in result.stderr

    result = qunbot(tmp_path, "config", "check", QUNBOT_SERVER_PROT="1")
    assert result.returncode == 2 and "QUNBOT_SERVER_PROT" in result.stderr

    result = qunbot(tmp_path, "-c", "missing.toml", "config", "check")
    assert result.returncode == 2 and "missing.toml" in result.stderr


# --- db upgrade -------------------------------------------------------------------------------------------


def test_db_upgrade_creates_the_tables_and_can_run_twice(tmp_path):
    from storage.migrate import current_heads

    db = tmp_path / "x.db"
    url = f"sqlite:///{db}"
    for _ in range(2):
        result = qunbot(tmp_path, "db", "upgrade", QUNBOT_DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
        names, versions = tables(db)
        assert {"inbox", "groups", "alembic_version"} <= names
        assert versions == current_heads()
    assert "database upgraded" in result.stderr


# --- run --------------------------------------------------------------------------------------------------


def test_run_with_an_invalid_config_exits_before_serving(tmp_path):
    port = free_port()
    start = time.monotonic()
    result = qunbot(tmp_path, "run", timeout=20, QUNBOT_SERVER_PORT=str(port), QUNBOT_LOG_LEVEL="LOUD")
    assert result.returncode == 2
    assert time.monotonic() - start < 15
    assert "log.level" in result.stderr and "QUNBOT_LOG_LEVEL" in result.stderr
    assert "running" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()
    assert not listening(port)

    (tmp_path / "bad.toml").write_text("[server]\nport = 0\n", encoding="utf-8")
    result = qunbot(tmp_path, "-c", "bad.toml", "run", timeout=20)
    assert result.returncode == 2
    assert "server.port" in result.stderr and "bad.toml" in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("port", ["0", "70000"])
def test_run_rejects_a_bad_port_option_like_a_config_error(tmp_path, port):
    config_port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bot", "run", "--port", port], cwd=tmp_path,
                            env=clean_env(QUNBOT_SERVER_PORT=str(config_port)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            assert not listening(config_port), f"--port {port} was ignored: serving on the configured port"
            time.sleep(0.1)
        _, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err
    assert "server.port" in err and "Traceback" not in err


def test_run_serves_the_simulator_and_stops_on_sigint(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stderr_path = tmp_path / "stderr.txt"
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(QUNBOT_SERVER_PORT=str(port), QUNBOT_WELCOME_MERGE_WINDOW_SECONDS="0.1")
    # Output goes to files: DEBUG logs could fill a pipe nobody reads and block the bot.
    with open(stderr_path, "w") as err, open(tmp_path / "stdout.txt", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bot", "--log-level", "debug", "run"], cwd=work, env=env,
                                stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 20
        health: tuple[int, Any] | None = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"qunbot exited with {proc.returncode}: {stderr_path.read_text()[-3000:]}"
            try:
                health = http("GET", f"{base}/healthz")
                break
            except OSError:
                time.sleep(0.1)
        assert health == (200, {"status": "ok", "database": "sqlite", "pid": proc.pid}), health

        status, body = http("POST", f"{base}/api/simulator/joins",
                            {"group": "g1", "users": [{"user": "u2", "name": "小红"}], "inviter": "u1"})
        assert status == 200, body
        [reply] = body["replies"]
        assert "@小红" in reply["text"] and reply["mentions"] == ["u2"]

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, stderr_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # The embedded database was created under the working directory and migrated on start.
    names, versions = tables(work / "data" / "qunbot.db")
    assert {"inbox", "groups"} <= names and versions

    # Logs: one event per line on stderr, "<time> <LEVEL> <logger> <message> key=value ...".
    lines = stderr_path.read_text(encoding="utf-8").splitlines()
    records = [m for m in map(LOG_LINE.match, lines) if m]
    assert any(m.group(1) == "DEBUG" for m in records), "--log-level DEBUG did not enable debug logs"
    started = [m.group(3) for m in records if m.group(2) == "qunbot.runtime" and m.group(3).startswith("bot started")]
    assert started, "no 'bot started' log line"
    processed = [m.group(3) for m in records
                 if m.group(2) == "qunbot.inbox" and m.group(3).startswith("event processed ")]
    assert processed, "no 'event processed' log line"
    pairs = processed[0].removeprefix("event processed ").split(" ")
    assert all(re.fullmatch(r"[a-z_]+=\S+", pair) for pair in pairs), processed[0]
    fields = dict(pair.split("=", 1) for pair in pairs)
    assert fields["event_type"] == "member_joined" and fields["group"] == "g1" and fields["replies"] == "1"
    assert "Traceback" not in "\n".join(lines)


def test_statements_and_their_parameters_are_never_logged():
    import logging

    from bot.logs import setup_logging

    for level in ("DEBUG", "INFO"):
        setup_logging(level)
        for name in ("sqlalchemy.engine", "aiosqlite", "asyncpg"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), (level, name)


def test_welcome_command_sets_text_rules_and_switch(tmp_path, monkeypatch, capsys):
    from bot.cli import main

    monkeypatch.setenv("QUNBOT_DATABASE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    assert main(["welcome", "set", "--group", "g9", "--text", "欢迎{names}加入{group_name}{rules}", "--rules", "不发广告"]) == 0
    out = capsys.readouterr().out
    assert "welcome on" in out and "欢迎@小新加入g9\n📌 群规：不发广告" in out
    assert main(["welcome", "off", "--group", "g9"]) == 0
    assert "welcome off" in capsys.readouterr().out
    assert main(["welcome", "set", "--group", "g9", "--text", "hi {nmes}"]) == 2
    assert "unknown placeholder(s) nmes" in capsys.readouterr().err
    assert main(["welcome", "set", "--group", "g9", "--text", ""]) == 0  # back to the default text
    assert "加入「g9」" in capsys.readouterr().out
