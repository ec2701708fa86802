"""`qunbot run --processes 2`: two bot processes serve one port as one bot, on SQLite and PostgreSQL.

Real processes and sockets: the supervisor starts the children, the kernel spreads connections over them,
a child killed with SIGKILL is replaced, SIGTERM stops them all, and a port someone else holds stops the
group with an error instead of a restart loop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli import clean_env, free_port, http

START_SECONDS = 40


def start(tmp_path: Path, db_url: str, port: int) -> subprocess.Popen[bytes]:
    env = clean_env(QUNBOT_DATABASE_URL=db_url, QUNBOT_SERVER_PORT=str(port), QUNBOT_LOG_LEVEL="INFO")
    with open(tmp_path / "stderr.txt", "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "bot", "run", "--processes", "2"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)


def pids_answering(base: str, attempts: int = 60) -> set[int]:
    """The pids that answer /healthz over `attempts` fresh connections."""
    seen = set()
    for _ in range(attempts):
        try:
            status, body = http("GET", f"{base}/healthz")
        except OSError:
            time.sleep(0.1)
            continue
        if status == 200:
            seen.add(body["pid"])
    return seen


def wait_for(predicate, seconds: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def exit_status(supervisor: subprocess.Popen[bytes]) -> int:
    """The supervisor's exit status; it must give up by itself rather than restart processes forever."""
    try:
        return supervisor.wait(timeout=START_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail("the supervisor kept restarting processes that cannot start")
    finally:
        stop(supervisor)


def test_two_processes_serve_one_port_as_one_bot_and_a_killed_one_is_replaced(tmp_path, db_url):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    supervisor = start(tmp_path, db_url, port)
    log = tmp_path / "stderr.txt"
    try:
        children = wait_for(lambda: len(p := pids_answering(base)) == 2 and p, START_SECONDS,
                            "both processes answering")
        assert supervisor.pid not in children

        # One bot: every message is handled once and shows once in the group's transcript, whichever process
        # took the connection; the answer to 帮助 comes back from either.
        for n in range(8):
            status, body = http("POST", f"{base}/api/simulator/messages",
                                {"group": "g1", "user": f"u{n}", "name": f"成员{n}", "text": "帮助"})
            assert status == 200 and body["replies"], body
        status, transcript = http("GET", f"{base}/api/simulator/messages?group=g1")
        assert status == 200
        said = [m["text"] for m in transcript["messages"] if (m.get("user") or "").startswith("u")]
        assert said == ["帮助"] * 8, transcript

        victim = min(children)
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(lambda: len(p := pids_answering(base)) == 2 and victim not in p and p, START_SECONDS,
                            "a new process in place of the killed one")
        assert (replaced - children) and "a bot process exited; starting another" in log.read_text()

        assert stop(supervisor) == 0, log.read_text()[-3000:]
        assert not any(alive(pid) for pid in replaced)
    finally:
        stop(supervisor)


def test_a_port_held_by_someone_else_is_refused_with_a_clear_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        db = f"sqlite:///{tmp_path / 'q.db'}"
        code = exit_status(start(tmp_path, db, port))
    assert code == 1
    err = (tmp_path / "stderr.txt").read_text()
    assert f"cannot listen on 127.0.0.1:{port}" in err and "server.port" in err, err


def test_a_process_that_cannot_start_stops_the_group_instead_of_restarting_forever(tmp_path):
    # PostgreSQL that refuses connections: each child fails while starting (after the port check passed).
    port = free_port()
    code = exit_status(start(tmp_path, "postgresql://nobody@127.0.0.1:1/none", port))
    assert code > 0
    assert "a bot process failed to start; stopping all" in (tmp_path / "stderr.txt").read_text()


def test_processes_stop_by_themselves_when_their_supervisor_is_killed(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    supervisor = start(tmp_path, f"sqlite:///{tmp_path / 'q.db'}", port)
    try:
        children = wait_for(lambda: len(p := pids_answering(base)) == 2 and p, START_SECONDS,
                            "both processes answering")
        supervisor.kill()
        supervisor.wait()
        wait_for(lambda: not any(alive(pid) for pid in children), 30, "the orphaned processes to stop")
        assert not pids_answering(base, attempts=3)  # nobody is left holding the port
        assert "the supervisor is gone; stopping" in (tmp_path / "stderr.txt").read_text()
    finally:
        stop(supervisor)


@pytest.mark.parametrize(("processes", "each"), [(1, 8), (2, 4), (3, 3), (16, 1)])
def test_each_process_holds_processing_back_at_its_share_of_a_burst(tmp_path, processes, each):
    # inbox.busy_accepts counts the bot's waiting callbacks; N processes each see about 1/N of them.
    from bot.config import load_config
    from bot.supervisor import child_env

    config = load_config(None, environ={"QUNBOT_DATABASE_URL": f"sqlite:///{tmp_path}/q.db"})
    env = child_env(config, processes)
    assert env["QUNBOT_INBOX_BUSY_ACCEPTS"] == str(each)
    assert env["QUNBOT_DATABASE_AUTO_MIGRATE"] == "false"
    child = load_config(None, environ={k: v for k, v in env.items() if k.startswith("QUNBOT_")})
    assert child.inbox.busy_accepts == each
