"""Two real `qunbot run` processes on one database behave as one bot: every callback is processed once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from sqlalchemy import select

from storage.db import Database
from storage.groups import Member, Membership
from storage.inbox import InboxMessage
from tests.test_cli import clean_env, free_port
from tests.wecom_helpers import AES_KEY, CORP_ID, TOKEN, callback, chat_change_xml

ROOT = Path(__file__).resolve().parent.parent


def start(db_url: str, port: int) -> subprocess.Popen[str]:
    env = clean_env(QUNBOT_DATABASE_URL=db_url, QUNBOT_DATABASE_AUTO_MIGRATE="false", QUNBOT_SERVER_PORT=str(port),
                    QUNBOT_WECOM_ENABLED="true", QUNBOT_WECOM_CORP_ID=CORP_ID, QUNBOT_WECOM_TOKEN=TOKEN,
                    QUNBOT_WECOM_ENCODING_AES_KEY=AES_KEY, QUNBOT_SIMULATOR_ENABLED="false")
    return subprocess.Popen([sys.executable, "-m", "bot", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def wait_healthy(http: aiohttp.ClientSession, port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"bot on port {port} did not become healthy")


async def test_four_deliveries_split_across_two_processes_are_processed_once(db_url):
    ports = [free_port(), free_port()]
    procs = [start(db_url, port) for port in ports]
    try:
        async with aiohttp.ClientSession() as http:
            for port in ports:
                await wait_healthy(http, port)
            t = int(time.time())
            deliveries = []
            for n in range(15):
                params, body = callback(chat_change_xml("wrTwo", "update", "add_member", [f"wm{n}"], join_scene=3,
                                                        created=t + n, mem_ver=f"v{n}"))
                # The original and WeCom's three retries, at once, two to each process.
                for port in ports + ports:
                    deliveries.append(http.post(f"http://127.0.0.1:{port}/wecom/callback", params=params, data=body))
            responses = await asyncio.gather(*deliveries)
            assert [r.status for r in responses] == [200] * 60
            for r in responses:
                r.release()
        db = Database(db_url)
        try:
            deadline = time.monotonic() + 20
            while True:
                async with db.session() as session:
                    rows = list((await session.execute(select(InboxMessage))).scalars())
                if len(rows) == 15 and all(r.status == "done" for r in rows) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert len(rows) == 15
            # Processed once each: done on the first attempt (a second processing would have to claim it again).
            assert {(r.status, r.attempts) for r in rows} == {("done", 1)}
            async with db.session() as session:
                stays = (await session.execute(select(Member.external_id).join(
                    Membership, Membership.member_id == Member.id))).scalars().all()
            assert sorted(stays) == sorted(f"wm{n}" for n in range(15))
        finally:
            await db.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            assert proc.returncode == 0, err[-2000:]
            assert "Traceback" not in err, err[-2000:]
    assert os.environ.get("QUNBOT_DATABASE_URL") is None  # nothing leaked into this process
