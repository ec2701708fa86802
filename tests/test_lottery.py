"""Verifiable lotteries end to end: chat through the simulator and the WeCom app, the scheduled draw across
processes, prize stock kept by the database, redraws, the CLI, and the README recipe reproducing a draw.

Every test runs on SQLite and on PostgreSQL (the `db_url` fixture), over real sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from bot.cli import main as cli_main
from scheduler.lottery import run_due_draws
from storage import lottery as store
from storage.audit import AuditEntry
from storage.db import utcnow
from storage.groups import Member, Membership
from storage.lottery import Lottery, LotteryEntry, LotteryPrize, LotteryRound, LotteryWinner, PrizeSpec
from storage.points import PointsEntry
from storage.transcript import TranscriptMessage
from tests.conftest import make_config
from tests.fakes.wecom_server import FakeWeCom
from tests.wecom_helpers import CORP_ID, callback, text_xml, wecom_env

NAMES = {"boss": "老板", "u1": "小明", "u2": "小红", "u3": "小刚", "u4": "小丽", "u5": "小强", "u6": "小芳"}
MEMBERS = ["u1", "u2", "u3", "u4", "u5"]
COMMITMENT = re.compile(r"SHA-256\(种子\) = ([0-9a-f]{64})")
CREATED_ID = re.compile(r"（编号 (\d+)）")


# -- helpers -------------------------------------------------------------------------------------------


async def say(bot: Any, text: str, user: str = "u1", *, group: str = "g1", role: str | None = None) -> list[dict]:
    """A member's message through the simulator API; the bot's replies."""
    body = {"group": group, "user": user, "name": NAMES.get(user, user), "text": text}
    if role:
        body["role"] = role
    status, data = await bot.post_json("/api/simulator/messages", body)
    assert status == 200, data
    return data["replies"]


async def create(bot: Any, spec: str, *, group: str = "g1") -> tuple[int, str]:
    """An admin creates a lottery in chat; its number and published commitment."""
    [reply] = await say(bot, f"抽奖 创建 {spec}", "boss", group=group, role="owner")
    number, commitment = CREATED_ID.search(reply["text"]), COMMITMENT.search(reply["text"])
    assert number and commitment, reply["text"]
    return int(number.group(1)), commitment.group(1)


async def query(bot: Any, statement: Any) -> list[Any]:
    async with bot.runtime.db.session() as session:
        return list((await session.execute(statement)).all())


async def pass_deadline(bot: Any, lottery_id: int) -> None:
    """Time passes: the lottery's deadline is now behind us."""
    async with bot.runtime.db.session() as session:
        await session.execute(update(Lottery).where(Lottery.id == lottery_id)
                              .values(deadline=utcnow() - timedelta(seconds=1)))


async def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], db_url: str,
              *args: str) -> tuple[int, str, str]:
    """`qunbot …` in this process (in a thread: the CLI runs its own event loop)."""
    capsys.readouterr()
    monkeypatch.setenv("QUNBOT_DATABASE_URL", db_url)
    monkeypatch.setenv("QUNBOT_DATABASE_AUTO_MIGRATE", "false")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = await asyncio.to_thread(cli_main, list(args))
    finally:  # the CLI points the root logger at this test's (soon closed) stderr: put it back
        root.handlers[:], root.level = handlers, level
    out, err = capsys.readouterr()
    return code, out, err


def readme_recipe(seed_hex: str, entrant_ids: list[str], picks: int) -> tuple[str, str, list[str]]:
    """The README's "Verifiable lotteries" recipe, written here from the README alone (not the bot's module):
    (commitment, entrant-list hash, the first `picks` picks)."""
    seed = bytes.fromhex(seed_hex)
    ids = sorted(entrant_ids, key=lambda s: s.encode("utf-8"))
    counter = 0

    def below(m: int) -> int:
        nonlocal counter
        limit = 2**256 - 2**256 % m
        while True:
            x = int.from_bytes(hashlib.sha256(seed + b"qunbot-lottery" + counter.to_bytes(8, "big")).digest(), "big")
            counter += 1
            if x < limit:
                return x % m

    pool = list(ids)
    for i in range(min(picks, len(pool))):
        j = i + below(len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return (hashlib.sha256(seed).hexdigest(), hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest(),
            pool[:picks])


def published(text: str, label: str) -> str:
    found = re.search(rf"{label}：([0-9a-f]{{64}})", text)
    assert found, f"{label} not in {text!r}"
    return found.group(1)


# -- the whole story in a simulated group ----------------------------------------------------------------


async def test_admin_creates_members_join_admin_draws_and_the_readme_recipe_reproduces_it(
        bot, db_url, monkeypatch, capsys):
    number, commitment = await create(
        bot, "周末福利 | 一等奖x1，二等奖x2 | 30分钟后 | 关键词 我要抽奖 | 不含管理员")

    joins = {}
    for user, text in zip(MEMBERS, ["我要抽奖", "@群助手 我要抽奖", "我要抽奖 ", "@群助手\u2005我要抽奖", "我要抽奖"],
                          strict=True):
        [reply] = await say(bot, text, user)
        joins[user] = reply
    for n, user in enumerate(MEMBERS, 1):
        assert f"@{NAMES[user]} 已参加「周末福利」抽奖，你是第 {n} 位参与者。" in joins[user]["text"]
    assert joins["u2"]["mentions"] == ["u2"] and "@小红 已参加「周末福利」抽奖" in joins["u2"]["text"]
    [again] = await say(bot, "我要抽奖", "u1")
    assert "已经参加过" in again["text"]
    [admin] = await say(bot, "我要抽奖", "boss", role="owner")
    assert "不含管理员" in admin["text"]
    assert await say(bot, "我要抽奖吗", "u6") == []  # not the keyword

    [listing] = await say(bot, "抽奖", "u6")
    assert f"【{number}】周末福利" in listing["text"] and "发送「我要抽奖」（已有 5 人参加）" in listing["text"]
    assert commitment in listing["text"] and "管理员不参与" in listing["text"]

    [refused] = await say(bot, f"抽奖 开奖 {number}", "u1")
    assert refused["text"] == "抱歉，「抽奖 开奖」只有群管理员可以使用哦。"

    [announced] = await say(bot, f"抽奖 开奖 {number}", "boss", role="owner")
    text = announced["text"]
    assert text.startswith(f"🎉「周末福利」开奖啦（编号 {number}）")
    winners = announced["mentions"]
    assert len(winners) == 3 and set(winners) <= set(MEMBERS)
    assert all(f"@{NAMES[w]}" in text for w in winners)
    seed, entrants_hash = published(text, "种子"), published(text, "参与名单哈希")

    # The README recipe, by hand: commitment, list hash and winners all come out the same.
    mine_commitment, mine_hash, mine_picks = readme_recipe(seed, MEMBERS, 3)
    assert (mine_commitment, mine_hash) == (commitment, entrants_hash)
    assert f"一等奖：@{NAMES[mine_picks[0]]}" in text
    assert f"二等奖：@{NAMES[mine_picks[1]]}、@{NAMES[mine_picks[2]]}" in text
    assert winners == mine_picks

    # Entries are frozen: the keyword no longer joins anything.
    await say(bot, "我要抽奖", "u6")
    assert await query(bot, select(LotteryEntry.user).where(LotteryEntry.user == "u6")) == []

    [result] = await say(bot, f"抽奖 结果 {number}", "u6")
    assert seed in result["text"] and entrants_hash in result["text"] and commitment in result["text"]
    assert f"qunbot lottery verify {number}" in result["text"]

    code, out, _ = await cli(monkeypatch, capsys, db_url, "lottery", "verify", str(number))
    assert code == 0 and out.startswith(f"lottery {number}: OK")
    code, out, _ = await cli(monkeypatch, capsys, db_url, "lottery", "show", str(number), "--entrants")
    assert (code, out.splitlines()) == (0, sorted(MEMBERS))

    audit = await query(bot, select(AuditEntry.actor, AuditEntry.command, AuditEntry.result).order_by(AuditEntry.id))
    assert [tuple(a) for a in audit] == [("boss", "抽奖 创建", "ok"), ("u1", "抽奖 开奖", "refused"),
                                         ("boss", "抽奖 开奖", "ok")]


# -- the scheduled draw, once across processes ------------------------------------------------------------


def spy_posts(bot: Any) -> list[tuple[str, list[Any]]]:
    """Record what the simulator door is asked to post (mentions included), then post it."""
    posts: list[tuple[str, list[Any]]] = []
    channel = bot.runtime.channels["simulator"]
    original = channel.post

    async def post(group: str, replies: list[Any]) -> None:
        posts.append((group, list(replies)))
        await original(group, replies)

    channel.post = post
    return posts


async def bot_posts(bot: Any, group: str = "g1") -> list[str]:
    return [r[0] for r in await query(bot, select(TranscriptMessage.text).where(
        TranscriptMessage.group_external_id == group, TranscriptMessage.from_bot.is_(True))  # type: ignore[attr-defined]
        .order_by(TranscriptMessage.id))]


async def test_the_deadline_draw_is_posted_once_with_mentions_by_one_of_two_processes(db_url, bot_factory):
    config = make_config(db_url, lottery={"job_interval_seconds": 0.1})
    first, second = await bot_factory(config), await bot_factory(config)
    posts_first, posts_second = spy_posts(first), spy_posts(second)
    number, _ = await create(first, "限时抽奖 | 幸运奖x2 | 明天 20:00")
    for user in MEMBERS[:3]:
        await say(first if user != "u2" else second, "参加抽奖", user)
    await pass_deadline(first, number)

    async def announced() -> bool:
        [(at,)] = await query(first, select(Lottery.announced_at).where(Lottery.id == number))
        return at is not None

    deadline = asyncio.get_running_loop().time() + 10
    while not await announced():
        assert asyncio.get_running_loop().time() < deadline, "the scheduled job never announced the draw"
        await asyncio.sleep(0.05)
    # Both jobs keep running; a further run by either finds nothing to do.
    assert await run_due_draws(first.runtime, "another") == 0
    assert await run_due_draws(second.runtime, "yet-another") == 0

    # (The simulator delivers replies through post too: keep the announcements.)
    [(group, reply)] = [(g, r) for g, replies in posts_first + posts_second for r in replies if "开奖啦" in r.text]
    assert group == "g1" and reply.text.startswith(f"🎉「限时抽奖」开奖啦（编号 {number}）")
    rows = await query(first, select(LotteryWinner.user).order_by(LotteryWinner.pick))
    assert reply.mentions == [u for (u,) in rows] and len(rows) == 2
    assert [p for p in await bot_posts(first) if "开奖啦" in p] == [reply.text]
    [(actor,)] = await query(first, select(LotteryRound.actor))
    assert actor == "scheduler"


async def seed_lottery(bot: Any, *, entrants: int, prizes: list[PrizeSpec], group: str = "g1",
                       title: str = "压力测试") -> int:
    """A lottery with `entrants` members entered, its deadline just passed (set up through storage)."""
    from storage.groups import ensure_group, ensure_member

    now = utcnow()
    async with bot.runtime.db.session() as session:
        grp = await ensure_group(session, "simulator", group)
        lottery, _ = await store.create_lottery(session, group_id=grp.id, title=title, keyword=f"kw{title}",
                                                deadline=now + timedelta(hours=1), prizes=prizes,
                                                now=now - timedelta(hours=1))
        for n in range(entrants):
            member = await ensure_member(session, "simulator", f"m{n:05d}", f"成员{n}")
            outcome, _ = await store.join(session, lottery, member_id=member.id, user=member.external_id,
                                          at=now, event_id=None, max_entrants=10**6)
            assert outcome is store.JoinOutcome.JOINED
    await pass_deadline(bot, lottery.id)
    return lottery.id


async def test_prize_stock_cannot_be_over_issued_by_any_write(bot):
    number = await seed_lottery(bot, entrants=6, prizes=[PrizeSpec("一等奖", 1), PrizeSpec("二等奖", 2)])
    # Eight drawers at once (two of them for every claim path): one draw, three winners.
    holders = [f"h{n}" for n in range(8)]
    await asyncio.gather(*(run_due_draws(bot.runtime, h) for h in holders))
    assert len(await query(bot, select(LotteryRound.id))) == 1
    rows = await query(bot, select(LotteryWinner.prize_id, LotteryWinner.prize_stock, LotteryWinner.slot,
                                   LotteryWinner.entry_id, LotteryWinner.round_id).order_by(LotteryWinner.pick))
    assert len(rows) == 3
    prizes = {name: (pid, stock) for pid, name, stock in await query(
        bot, select(LotteryPrize.id, LotteryPrize.name, LotteryPrize.stock))}
    first_id, first_stock = prizes["一等奖"]
    losers = [eid for (eid,) in await query(bot, select(LotteryEntry.id))
              if eid not in {r.entry_id for r in rows}]
    round_id = rows[0].round_id

    def extra(**overrides: Any) -> LotteryWinner:
        values = {"lottery_id": number, "round_id": round_id, "prize_id": first_id, "prize_stock": first_stock,
                  "slot": 0, "pick": 99, "entry_id": losers[0], "member_id": 1, "user": "m99999"}
        return LotteryWinner(**{**values, **overrides})

    attempts = {
        "a second holder of the only 一等奖": extra(),
        "a slot beyond the stock": extra(slot=1),
        "a stock claimed larger than the prize's": extra(slot=1, prize_stock=2),
        "a negative slot": extra(slot=-1),
        "a second prize for the same entrant": extra(entry_id=rows[0].entry_id, prize_id=prizes["二等奖"][0],
                                                     prize_stock=2, slot=1),
    }
    for what, row in attempts.items():
        with pytest.raises(IntegrityError):
            async with bot.runtime.db.session() as session:
                session.add(row)
        assert len(await query(bot, select(LotteryWinner.id))) == 3, what


async def test_many_due_lotteries_are_each_drawn_and_announced_once_by_two_processes(db_url, bot_factory):
    config = make_config(db_url)
    first, second = await bot_factory(config), await bot_factory(config)
    numbers = [await seed_lottery(first, entrants=4, prizes=[PrizeSpec("奖", 2)], title=f"第{n}期")
               for n in range(6)]
    await asyncio.gather(*(run_due_draws(b.runtime, f"{b.runtime.instance}-{n}")
                           for n in range(3) for b in (first, second)))
    rounds = await query(first, select(LotteryRound.lottery_id, func.count()).group_by(LotteryRound.lottery_id))
    assert sorted(rounds) == [(n, 1) for n in numbers]
    states = await query(first, select(Lottery.status, Lottery.announced_at.is_not(None)))  # type: ignore[union-attr]
    assert set(states) == {("drawn", True)}
    posted = [p for p in await bot_posts(first) if "开奖啦" in p]
    assert sorted(posted) == sorted(set(posted)) and len(posted) == len(numbers)


async def test_a_crashed_drawer_is_replaced_after_its_lease_and_a_cli_draw_is_announced_by_the_job(
        bot, db_url, monkeypatch, capsys):
    number = await seed_lottery(bot, entrants=3, prizes=[PrizeSpec("奖", 1)])
    # A process claimed it and died: while its lease runs, nobody else touches it.
    async with bot.runtime.db.session() as session:
        await session.execute(update(Lottery).where(Lottery.id == number).values(
            status="drawing", lease_holder="dead-process", lease_until=utcnow() + timedelta(minutes=1)))
    assert await run_due_draws(bot.runtime, "alive") == 0
    assert await query(bot, select(LotteryRound.id)) == []
    async with bot.runtime.db.session() as session:
        await session.execute(update(Lottery).where(Lottery.id == number)
                              .values(lease_until=utcnow() - timedelta(seconds=1)))
    assert await run_due_draws(bot.runtime, "alive") == 1
    [(status, holder)] = await query(bot, select(Lottery.status, Lottery.lease_holder))
    assert (status, holder) == ("drawn", None)
    assert len([p for p in await bot_posts(bot) if "开奖啦" in p]) == 1

    # Drawn from the command line (no doors there): the running bot's job announces it.
    second = await seed_lottery(bot, entrants=2, prizes=[PrizeSpec("奖", 1)], title="命令行开奖")
    async with bot.runtime.db.session() as session:
        await session.execute(update(Lottery).where(Lottery.id == second)
                              .values(deadline=utcnow() + timedelta(hours=1)))
    code, out, _ = await cli(monkeypatch, capsys, db_url, "lottery", "draw", str(second))
    assert code == 0 and f"lottery {second} drawn: 2 entrants" in out
    assert await run_due_draws(bot.runtime, "alive") == 1
    posted = [p for p in await bot_posts(bot) if "开奖啦" in p]
    assert len(posted) == 2 and "命令行开奖" in posted[1]
    assert await run_due_draws(bot.runtime, "alive") == 0


# -- redraws ---------------------------------------------------------------------------------------------


async def test_a_redraw_forfeits_the_unclaimed_prize_and_takes_the_next_pick_of_the_same_shuffle(
        bot, db_url, monkeypatch, capsys):
    number, commitment = await create(bot, "月末抽奖 | 一等奖x1, 二等奖x1 | 明天 20:00")
    for user in MEMBERS:
        await say(bot, "参加抽奖", user)
    [announced] = await say(bot, f"抽奖 开奖 {number}", "boss", role="owner")
    first, second = announced["mentions"]
    seed = published(announced["text"], "种子")

    [refused] = await say(bot, f"抽奖 重抽 {number} 一等奖 @{NAMES[second]}", "boss", role="owner")
    assert f"「{NAMES[second]}」不是「一等奖」的有效中奖者" in refused["text"]
    [redrawn] = await say(bot, f"抽奖 重抽 {number} 一等奖 @{NAMES[first]} 三天没回复", "boss", role="owner")
    [new] = redrawn["mentions"]
    assert new not in (first, second)
    assert redrawn["text"] == (f"🔁「月末抽奖」（编号 {number}）一等奖重抽：@{NAMES[first]} 的奖品作废（三天没回复），"
                               f"新的中奖者是 @{NAMES[new]}（第 2 抽，可用同一种子验证）。")
    # The README recipe: the redraw is pick 2 of the same shuffle.
    assert readme_recipe(seed, MEMBERS, 3)[2] == [first, second, new]

    [(forfeited_by, reason)] = await query(bot, select(LotteryWinner.forfeited_by, LotteryWinner.forfeit_reason)
                                           .where(LotteryWinner.forfeited_at.is_not(None)))  # type: ignore[union-attr]
    assert (forfeited_by, reason) == ("chat:boss", "三天没回复")
    assert [tuple(r) for r in await query(bot, select(LotteryRound.number, LotteryRound.kind, LotteryRound.first_pick)
                                          .order_by(LotteryRound.number))] == [(0, "draw", 0), (1, "redraw", 2)]
    [result] = await say(bot, f"抽奖 结果 {number}", "u1")
    assert f"一等奖：@{NAMES[new]}" in result["text"] and "由第 2 抽重抽" in result["text"]
    assert commitment in result["text"]

    code, out, _ = await cli(monkeypatch, capsys, db_url, "lottery", "redraw", str(number), "--prize", "二等奖",
                             "--winner", second, "--reason", "放弃")
    assert code == 0 and f"{second} forfeited (放弃), pick 3 -> " in out
    code, out, _ = await cli(monkeypatch, capsys, db_url, "lottery", "verify", str(number))
    assert code == 0, out
    [(cli_actor, cli_result)] = await query(bot, select(AuditEntry.actor, AuditEntry.result)
                                            .where(AuditEntry.source == "cli"))
    assert cli_result == "ok" and cli_actor


async def test_verify_says_exactly_what_was_tampered_with(bot, db_url, monkeypatch, capsys):
    number = await seed_lottery(bot, entrants=5, prizes=[PrizeSpec("奖", 2)])
    await run_due_draws(bot.runtime, "drawer")
    code, out, _ = await cli(monkeypatch, capsys, db_url, "lottery", "verify", str(number))
    assert code == 0, out
    [(winner_id, real)] = await query(bot, select(LotteryWinner.id, LotteryWinner.user).where(LotteryWinner.pick == 0))
    won = {w for (w,) in await query(bot, select(LotteryWinner.user))}
    loser = next(u for (u,) in await query(bot, select(LotteryEntry.user)) if u not in won)
    async with bot.runtime.db.session() as session:
        await session.execute(update(LotteryWinner).where(LotteryWinner.id == winner_id).values(user=loser))
    code, out, _ = await cli(monkeypatch, capsys, db_url, "lottery", "verify", str(number))
    assert code == 1
    assert out.splitlines() == [f"lottery {number}: MISMATCH", f"  pick 0 (奖 #1): recorded {loser}, recomputed {real}"]

    async with bot.runtime.db.session() as session:  # an entry slipped in after the draw
        await session.execute(update(LotteryWinner).where(LotteryWinner.id == winner_id).values(user=real))
        from storage.groups import ensure_member

        late = await ensure_member(session, "simulator", "late")
        session.add(LotteryEntry(lottery_id=number, member_id=late.id, user="late"))
    code, out, _ = await cli(monkeypatch, capsys, db_url, "lottery", "verify", str(number))
    assert code == 1 and "entrant list hash mismatch: stored list (6 entrants)" in out


# -- who may join --------------------------------------------------------------------------------------


async def test_eligibility_refusals_are_polite_and_enter_nobody(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, lottery={"max_entrants": 2}))
    number, _ = await create(bot, "老成员专享 | 奖x1 | 明天 20:00 | 入群满 3 天")
    [new] = await say(bot, "参加抽奖", "u1")
    assert new["text"] == "@小明 抱歉，「老成员专享」抽奖要求入群满 3 天才能参加。"
    async with bot.runtime.db.session() as session:  # u1..u3 have been here for four days
        await session.execute(update(Membership).values(joined_at=utcnow() - timedelta(days=4)))
    await say(bot, "你好", "u2")
    await say(bot, "你好", "u3")
    async with bot.runtime.db.session() as session:
        await session.execute(update(Membership).values(joined_at=utcnow() - timedelta(days=4)))
    assert "你是第 1 位" in (await say(bot, "参加抽奖", "u1"))[0]["text"]
    assert "你是第 2 位" in (await say(bot, "参加抽奖", "u2"))[0]["text"]
    assert (await say(bot, "参加抽奖", "u3"))[0]["text"] == "@小刚 「老成员专享」抽奖参与人数已满。"
    assert await say(bot, "参加抽奖", "u4", group="g2") == []  # another group's keyword is just chat

    await pass_deadline(bot, number)  # past the deadline, before the job has drawn it
    async with bot.runtime.db.session() as session:
        await session.execute(update(Lottery).values(entrant_count=0))
    assert (await say(bot, "参加抽奖", "u3"))[0]["text"] == "@小刚 「老成员专享」抽奖已截止，下次早点来哦。"
    entries = await query(bot, select(LotteryEntry.user).order_by(LotteryEntry.id))
    assert [u for (u,) in entries] == ["u1", "u2"]


async def test_creation_mistakes_get_the_problem_and_the_usage_and_are_audited(bot):
    cases = {
        "周末福利 | 一等奖x1": "⚠️ 请用「|」分开标题、奖品和截止时间",
        "周末福利 | 一等奖x0 | 明天 20:00": "⚠️ 看不懂奖品「一等奖x0」",
        "周末福利 | 一等奖x1 | 下辈子": "⚠️ 看不懂截止时间「下辈子」",
        "周末福利 | 一等奖x1 | 2020-01-01 20:00": "⚠️ 截止时间 2020-01-01 20:00 已经过去了",
        "周末福利 | 一等奖x1 | 明天 20:00 | 关键词 帮助": "⚠️ 关键词「帮助」不能用",
        "周末福利 | 一等奖x1 | 明天 20:00 | 每人三次": "⚠️ 看不懂选项「每人三次」",
        "周末福利 | 一等奖x600 | 明天 20:00": "⚠️ 中奖名额一共 600 个，超过了上限 500 个",
    }
    for spec, problem in cases.items():
        [reply] = await say(bot, f"抽奖 创建 {spec}", "boss", role="owner")
        assert reply["text"].startswith(problem), reply["text"]
        assert "用法：抽奖" in reply["text"]
    await create(bot, "周末福利 | 一等奖x1 | 明天 20:00")
    [taken] = await say(bot, "抽奖 创建 另一个 | 奖x1 | 后天 9点半", "boss", role="owner")
    assert taken["text"].startswith("⚠️ 本群已有进行中的抽奖在用关键词「参加抽奖」")
    [member] = await say(bot, "抽奖 创建 我的抽奖 | 奖x1 | 明天 20:00", "u1")
    assert member["text"] == "抱歉，「抽奖 创建」只有群管理员可以使用哦。"
    results = [r for (r,) in await query(bot, select(AuditEntry.result).order_by(AuditEntry.id))]
    assert results == ["usage"] * 7 + ["ok", "usage", "refused"]
    assert len(await query(bot, select(Lottery.id))) == 1


async def test_cancelled_lotteries_take_no_entries_and_points_prizes_are_credited(bot):
    number, _ = await create(bot, "取消的 | 奖x1 | 明天 20:00")
    [cancelled] = await say(bot, f"抽奖 取消 {number}", "boss", role="owner")
    assert cancelled["text"] == f"已取消抽奖「取消的」（编号 {number}）。"
    assert await say(bot, "参加抽奖", "u1") == []
    [result] = await say(bot, f"抽奖 结果 {number}", "u1")
    assert result["text"] == f"「取消的」（编号 {number}）已取消。"

    points, _ = await create(bot, "积分雨 | 50积分x2 | 明天 20:00 | 关键词 抢积分")
    for user in MEMBERS[:3]:
        await say(bot, "抢积分", user)
    [announced] = await say(bot, f"抽奖 开奖 {points}", "boss", role="owner")
    ledger = await query(bot, select(Member.external_id, PointsEntry.delta, PointsEntry.kind)
                         .join(Member, Member.id == PointsEntry.member_id))
    assert sorted(tuple(r) for r in ledger) == sorted((u, 50, "lottery") for u in announced["mentions"])
    [again] = await say(bot, f"抽奖 开奖 {points}", "boss", role="owner")
    assert again["text"].startswith(f"「积分雨」（编号 {points}）已经开过奖了。")
    assert len(await query(bot, select(PointsEntry.id))) == 2


# -- the WeCom app: the 1:1 scope ------------------------------------------------------------------------

WECOM_SECRET = "s3cret"


@pytest_asyncio.fixture
async def fake() -> Any:
    async with FakeWeCom(corp_id=CORP_ID, corp_secret=WECOM_SECRET) as server:
        yield server


async def test_wecom_members_join_by_messaging_the_app_and_winners_hear_the_result_one_to_one(
        db_url, fake, bot_factory):
    bot = await bot_factory(make_config(
        db_url, admins={"bot_admins": "wecom:boss"},
        wecom=wecom_env(api_base_url=fake.base_url, corp_secret=WECOM_SECRET, agent_id=1000002,
                        sync_welcome_template=False)))

    async def message_app(msg_id: int, text: str, user: str) -> dict[str, Any]:
        params, body = callback(text_xml(msg_id, text, user=user))
        async with bot.http.post(bot.url("/wecom/callback"), params=params, data=body) as resp:
            assert (resp.status, await resp.text()) == (200, "success")
        await bot.runtime.inbox.drain()
        return fake.sent_messages[-1]

    created = await message_app(1, "抽奖 创建 企微福利 | 一等奖x2 | 明天 20:00", "boss")
    assert created["touser"] == "boss"
    number = int(CREATED_ID.search(created["text"]["content"]).group(1))
    users = ["zhangsan", "lisi", "wangwu"]
    for n, user in enumerate(users, 2):
        joined = await message_app(n, "参加抽奖", user)
        assert joined["touser"] == user and "已参加「企微福利」抽奖" in joined["text"]["content"]
    sent_before = len(fake.sent_messages)

    await pass_deadline(bot, number)
    assert await run_due_draws(bot.runtime, "drawer") == 1
    [announcement] = fake.sent_messages[sent_before:]
    winners = [u for (u,) in await query(bot, select(LotteryWinner.user).order_by(LotteryWinner.pick))]
    assert announcement["touser"] == "|".join(winners) and len(winners) == 2 and set(winners) <= set(users)
    assert announcement["text"]["content"].startswith(f"🎉「企微福利」开奖啦（编号 {number}）")
    [(announced,)] = await query(bot, select(Lottery.announced_at))
    assert announced is not None

    result = await message_app(10, f"抽奖 结果 {number}", "lisi")
    assert result["touser"] == "lisi" and "参与名单哈希" in result["text"]["content"]
