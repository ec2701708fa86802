"""Acknowledgements first: a burst of callbacks is answered at once; its processing follows, once each.

While callbacks pour in, background processing is paced to a share of what is accepted; the queued events
are leased rows, so nothing waits in memory alone. Beyond the in-memory backlog, or when an event waited
for most of its lease, the recovery scan takes it over: later, but still exactly once. Both databases,
real sockets, the fake WeCom server for the replies (message/send).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from storage.inbox import InboxMessage
from tests.conftest import make_config
from tests.door_helpers import eventually
from tests.fakes.wecom_server import FakeWeCom
from tests.wecom_helpers import CORP_ID, callback, text_xml, wecom_env

PATH = "/wecom/callback"
SECRET = "s3cret"
HELP_HEADER = "我可以帮你做这些事："


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with FakeWeCom(corp_id=CORP_ID, corp_secret=SECRET) as server:
        yield server


def config(db_url: str, fake: FakeWeCom, **inbox: object):
    return make_config(db_url, wecom=wecom_env(api_base_url=fake.base_url, corp_secret=SECRET, agent_id=1000002,
                                               sync_welcome_template=False),
                       inbox=inbox)


async def burst(bot, count: int, first_id: int) -> list[tuple[int, str]]:
    """`count` distinct 帮助 messages from distinct users, all at once; each answer as (status, body)."""

    async def one(n: int) -> tuple[int, str]:
        params, body = callback(text_xml(first_id + n, "帮助", user=f"user{n}"))
        async with bot.http.post(bot.url(PATH), params=params, data=body) as resp:
            return resp.status, await resp.text()

    return await asyncio.gather(*(one(n) for n in range(count)))


async def statuses(bot) -> Counter[str]:
    async with bot.runtime.db.session() as session:
        rows = await session.execute(select(InboxMessage.status, func.count()).group_by(InboxMessage.status))
        return Counter(dict(rows.all()))


def replies_per_user(fake: FakeWeCom) -> Counter[str]:
    assert all(m["text"]["content"].startswith(HELP_HEADER) for m in fake.sent_messages)
    return Counter(m["touser"] for m in fake.sent_messages)


async def test_a_burst_is_acknowledged_first_and_every_reply_follows_once(db_url, fake, bot_factory):
    # busy_accepts=1: every accept counts as a burst, so processing is paced to a tenth of the intake.
    bot = await bot_factory(config(db_url, fake, busy_accepts=1, busy_share=0.1, workers=4))
    answers = await burst(bot, 200, 7000)
    assert answers == [(200, "success")] * 200
    # Right after the burst most of it is still queued: processing gave the acknowledgements the turns.
    assert bot.runtime.inbox.backlog >= 60
    await bot.runtime.inbox.drain()
    assert replies_per_user(fake) == Counter({f"user{n}": 1 for n in range(200)})
    assert await statuses(bot) == Counter({"done": 200})


async def test_without_a_burst_processing_keeps_pace(db_url, fake, bot_factory):
    bot = await bot_factory(config(db_url, fake))  # defaults: 8 accepts waiting at once make a burst
    for n in range(5):
        params, body = callback(text_xml(7500 + n, "帮助", user=f"solo{n}"))
        async with bot.http.post(bot.url(PATH), params=params, data=body) as resp:
            assert resp.status == 200
        await eventually(lambda n=n: len(fake.sent_messages) == n + 1, within=5,
                         what="a lone message answered without waiting for anything")
    assert not bot.runtime.inbox.busy


async def test_beyond_the_backlog_events_are_read_back_from_their_rows_and_run_once(db_url, fake, bot_factory):
    # A queue of 100: the rest of the burst is kept as ids and read back from the inbox as the queue empties,
    # long before any lease (60 s) could run out.
    bot = await bot_factory(config(db_url, fake, busy_accepts=1, busy_share=0.05, workers=4, backlog_max=100))
    answers = await burst(bot, 300, 8000)
    assert answers == [(200, "success")] * 300
    assert bot.runtime.inbox.backlog > 100
    started = time.monotonic()
    await bot.runtime.inbox.drain()
    assert time.monotonic() - started < 30
    assert await statuses(bot) == Counter({"done": 300})
    assert replies_per_user(fake) == Counter({f"user{n}": 1 for n in range(300)})


async def test_events_waiting_most_of_their_lease_go_to_recovery_and_run_once(db_url, fake, bot_factory, caplog):
    # A short lease and slow processing: events still queued near the end of their lease are handed to the
    # recovery scan, which any process runs (a second bot, like another process, joins in).
    fake.latency = 0.05  # each reply (message/send) takes 50 ms: 300 of them one at a time outlast the lease
    cfg = config(db_url, fake, busy_accepts=1, busy_share=0.05, workers=1, backlog_max=100, lease_seconds=4,
                 recovery_interval_seconds=0.5)
    first = await bot_factory(cfg)
    second = await bot_factory(cfg)
    with caplog.at_level(logging.WARNING, logger="qunbot.inbox"):
        answers = await burst(first, 300, 8500)
        assert answers == [(200, "success")] * 300

        async def all_done() -> bool:
            return (await statuses(first)).get("done", 0) == 300

        await eventually(all_done, within=90, what="every event processed")
    assert "event left to the recovery scan" in caplog.text
    await asyncio.gather(first.runtime.inbox.drain(), second.runtime.inbox.drain())
    assert await statuses(first) == Counter({"done": 300})
    assert replies_per_user(fake) == Counter({f"user{n}": 1 for n in range(300)})


@pytest.mark.parametrize("share", [0.0, -1.0])
def test_busy_share_must_be_positive(share, tmp_path):
    from bot.config import ConfigError

    with pytest.raises(ConfigError, match="inbox.busy_share"):
        make_config(f"sqlite:///{tmp_path}/x.db", inbox={"busy_share": share})
