"""Benchmark: how long the smart bot door takes to answer a message inline, against the simulator door
answering the same command in the same run (the baseline: same inbox, dispatcher and handlers, no crypto
and no reply state).

A smart bot reply must be known within `smartbot.reply_budget_seconds` (default 2 s; WeCom gives up at 5 s)
to go back in the callback's own response; what this measures is how much of that budget the door itself
uses. Every request is a distinct message ("帮助", the help command), sequentially and then from
`--concurrency` clients at once, on SQLite (a temporary file) or on the PostgreSQL URL given.

Run: .venv/bin/python -m bench.smartbot [--requests 300] [--concurrency 32] [--database postgresql://…]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from bot.app import RUNTIME, create_app
from bot.config import load_config
from storage.migrate import upgrade
from tests.smartbot_helpers import PATH, encrypt, message, open_reply, smartbot_env


async def timed(fn, count: int, concurrency: int) -> list[float]:  # noqa: ANN001 - an async callable of n
    """Latencies (ms) of `count` calls of fn(n), `concurrency` at a time."""
    latencies: list[float] = []
    queue = iter(range(count))

    async def worker() -> None:
        for n in queue:
            start = time.perf_counter()
            await fn(n)
            latencies.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def report(name: str, latencies: list[float], budget_ms: float) -> None:
    q = statistics.quantiles(latencies, n=100)
    within = sum(1 for x in latencies if x <= budget_ms) / len(latencies)
    print(f"{name:<34} n={len(latencies):<5} p50={q[49]:7.1f} ms  p95={q[94]:7.1f} ms  p99={q[98]:7.1f} ms  "
          f"max={max(latencies):7.1f} ms  within budget: {within:.1%}")


async def main(requests: int, concurrency: int, database: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        await upgrade(url)
        env = {"QUNBOT_DATABASE_URL": url, "QUNBOT_DATABASE_AUTO_MIGRATE": "false", "QUNBOT_LOG_LEVEL": "WARNING"}
        env.update({f"QUNBOT_SMARTBOT_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in smartbot_env().items()})
        config = load_config(None, environ=env)
        app = create_app(config)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        budget_ms = config.smartbot.reply_budget_seconds * 1000
        run = uuid.uuid4().hex[:8]
        ids = itertools.count()
        try:
            async with aiohttp.ClientSession() as http:

                async def simulator(n: int) -> None:
                    body = {"group": "g-bench", "user": f"u{n % 50}", "text": "帮助", "message_id": f"{run}-s{next(ids)}"}
                    async with http.post(server.make_url("/api/simulator/messages"), json=body) as resp:
                        data = await resp.json()
                        assert resp.status == 200 and data["replies"], data

                async def smartbot(n: int) -> None:
                    params, body = encrypt(message(f"{run}-b{next(ids)}", "@机器人 帮助", user=f"u{n % 50}", chatid="wrBench"))
                    async with http.post(server.make_url(PATH), params=params, data=body) as resp:
                        reply = open_reply(await resp.read())
                        assert resp.status == 200 and reply and reply["stream"]["finish"], reply

                print(f"database: {app[RUNTIME].db.dialect}; {requests} messages per row; budget {budget_ms:.0f} ms")
                await timed(simulator, 20, 1)  # warm up both paths
                await timed(smartbot, 20, 1)
                for clients in (1, concurrency):
                    report(f"simulator (baseline), {clients} client(s)", await timed(simulator, requests, clients), budget_ms)
                    report(f"smart bot inline, {clients} client(s)", await timed(smartbot, requests, clients), budget_ms)
        finally:
            await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--database", help="a PostgreSQL URL (migrated here); default: a temporary SQLite file")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.database))
