"""WeComClient against the fake WeCom server, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import pytest_asyncio

from bot.channels.wecom_api import (
    MemoryFailureRecorder,
    MemoryTokenStore,
    WeComAPIError,
    WeComClient,
    WeComTransientError,
    truncate_utf8,
)
from tests.fakes.wecom_server import FakeWeCom

GROUPCHAT = "/cgi-bin/externalcontact/groupchat/get"
MakeClient = Callable[..., WeComClient]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with FakeWeCom() as server:
        server.add_group_chat("wrChat1", name="读书会", owner="zhangsan", members=["zhangsan", "wmGuest1"],
                              admins=["lisi"])
        yield server


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def store() -> MemoryTokenStore:
    return MemoryTokenStore()


@pytest.fixture
def failures() -> MemoryFailureRecorder:
    return MemoryFailureRecorder()


@pytest.fixture
def make_client(fake: FakeWeCom, session: aiohttp.ClientSession, store: MemoryTokenStore,
                failures: MemoryFailureRecorder) -> MakeClient:
    def make(**overrides: object) -> WeComClient:
        kwargs: dict = {"base_url": fake.base_url, "corp_id": fake.corp_id, "corp_secret": fake.corp_secret,
                        "tokens": store, "failures": failures, "agent_id": fake.agent_id,
                        "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 2.0, **overrides}
        return WeComClient(session, **kwargs)
    return make


@pytest.mark.asyncio
async def test_token_fetched_once_and_shared_by_two_clients(fake: FakeWeCom, make_client: MakeClient) -> None:
    a, b = make_client(), make_client()
    for _ in range(5):
        await a.groupchat_get("wrChat1")
        await b.groupchat_get("wrChat1")
    assert fake.gettoken_calls == 1
    assert fake.calls_to(GROUPCHAT) == 10


@pytest.mark.asyncio
async def test_different_secrets_use_different_cache_keys(make_client: MakeClient) -> None:
    assert make_client().token_key != make_client(corp_secret="other-app-secret").token_key


@pytest.mark.asyncio
async def test_token_refreshed_ahead_of_expiry(fake: FakeWeCom, make_client: MakeClient,
                                               failures: MemoryFailureRecorder) -> None:
    fake.token_ttl = 3
    client = make_client(refresh_ahead_seconds=2.5)  # fresh for 0.5 s, valid for 3 s
    first = await client.get_access_token()
    assert await client.get_access_token() == first
    await asyncio.sleep(0.7)
    await client.groupchat_get("wrChat1")
    assert fake.gettoken_calls == 2
    assert await client.get_access_token() != first
    # Refreshed before WeCom refused anything: one request, no failure.
    assert fake.calls_to(GROUPCHAT) == 1 and failures.failures == []


@pytest.mark.asyncio
async def test_expired_token_is_refetched(fake: FakeWeCom, make_client: MakeClient) -> None:
    client = make_client()
    await client.groupchat_get("wrChat1")
    fake.expire_all_tokens()
    assert (await client.groupchat_get("wrChat1"))["chat_id"] == "wrChat1"
    assert fake.gettoken_calls == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("errcode", [42001, 40014, 40001])
async def test_token_errors_refetch_once_and_succeed(fake: FakeWeCom, make_client: MakeClient,
                                                     store: MemoryTokenStore, errcode: int) -> None:
    client = make_client()
    old = await client.get_access_token()
    fake.fail_next(GROUPCHAT, errcode)
    assert (await client.groupchat_get("wrChat1"))["chat_id"] == "wrChat1"
    assert fake.gettoken_calls == 2 and fake.calls_to(GROUPCHAT) == 2
    assert store.tokens[client.token_key][0] != old


@pytest.mark.asyncio
async def test_token_error_twice_is_raised(fake: FakeWeCom, make_client: MakeClient,
                                           failures: MemoryFailureRecorder) -> None:
    fake.fail_next(GROUPCHAT, 42001, times=2)
    with pytest.raises(WeComAPIError) as err:
        await make_client().groupchat_get("wrChat1")
    assert not isinstance(err.value, WeComTransientError)
    assert err.value.errcode == 42001 and fake.gettoken_calls == 2
    assert failures.failures[0]["attempts"] == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("errcode", [45009, 45033, -1])
async def test_transient_errcodes_retried_then_succeed(fake: FakeWeCom, make_client: MakeClient,
                                                       failures: MemoryFailureRecorder, errcode: int) -> None:
    fake.fail_next(GROUPCHAT, errcode, times=2)
    assert (await make_client().groupchat_get("wrChat1"))["name"] == "读书会"
    assert fake.calls_to(GROUPCHAT) == 3 and fake.gettoken_calls == 1
    assert failures.failures == []


@pytest.mark.asyncio
async def test_gettoken_busy_is_retried(fake: FakeWeCom, make_client: MakeClient) -> None:
    fake.fail_next("gettoken", -1)
    await make_client().groupchat_get("wrChat1")
    assert fake.gettoken_calls == 2 and fake.calls_to(GROUPCHAT) == 1


@pytest.mark.asyncio
async def test_rate_limit_answers_45009_until_exhausted(fake: FakeWeCom, make_client: MakeClient) -> None:
    fake.rate_limit_per_minute = 2
    client = make_client(max_attempts=2)
    await client.groupchat_get("wrChat1")
    await client.groupchat_get("wrChat1")
    with pytest.raises(WeComTransientError) as err:
        await client.groupchat_get("wrChat1")
    assert err.value.errcode == 45009 and err.value.attempts == 2


@pytest.mark.asyncio
async def test_http_502_retried(fake: FakeWeCom, make_client: MakeClient) -> None:
    fake.http_fail_next(GROUPCHAT, 502, times=2)
    assert (await make_client().groupchat_get("wrChat1"))["owner"] == "zhangsan"
    assert fake.calls_to(GROUPCHAT) == 3


@pytest.mark.asyncio
async def test_permanent_error_recorded_and_raised(fake: FakeWeCom, make_client: MakeClient,
                                                   failures: MemoryFailureRecorder) -> None:
    with pytest.raises(WeComAPIError) as err:
        await make_client().groupchat_get("wrNoSuchChat")
    assert not isinstance(err.value, WeComTransientError)
    assert err.value.errcode == 40050 and fake.calls_to(GROUPCHAT) == 1
    assert failures.failures == [{"api": GROUPCHAT, "errcode": 40050, "errmsg": err.value.errmsg,
                                  "attempts": 1, "detail": "permanent failure after 1 attempt(s)"}]


@pytest.mark.asyncio
async def test_retries_exhausted_recorded_with_attempts(fake: FakeWeCom, make_client: MakeClient,
                                                        failures: MemoryFailureRecorder) -> None:
    fake.fail_next(GROUPCHAT, -1, times=10)
    with pytest.raises(WeComTransientError) as err:
        await make_client(max_attempts=3).groupchat_get("wrChat1")
    assert err.value.errcode == -1 and err.value.attempts == 3
    assert fake.calls_to(GROUPCHAT) == 3
    assert [(f["api"], f["errcode"], f["attempts"]) for f in failures.failures] == [(GROUPCHAT, -1, 3)]


@pytest.mark.asyncio
async def test_timeouts_retried_then_raised(fake: FakeWeCom, make_client: MakeClient,
                                            failures: MemoryFailureRecorder) -> None:
    client = make_client(max_attempts=2, timeout=0.2)
    await client.get_access_token()
    fake.latency = 0.5
    with pytest.raises(WeComTransientError) as err:
        await client.groupchat_get("wrChat1")
    assert err.value.errcode is None and "TimeoutError" in err.value.errmsg
    assert fake.calls_to(GROUPCHAT) == 2 and failures.failures[0]["attempts"] == 2


@pytest.mark.asyncio
async def test_connection_refused_retried_then_raised(session: aiohttp.ClientSession,
                                                      failures: MemoryFailureRecorder) -> None:
    fake = FakeWeCom()
    dead_url = await fake.start()
    await fake.stop()
    client = WeComClient(session, base_url=dead_url, corp_id="c", corp_secret="s", tokens=MemoryTokenStore(),
                         failures=failures, max_attempts=2, backoff_base=0.01)
    with pytest.raises(WeComTransientError):
        await client.groupchat_get("wrChat1")
    assert failures.failures[0]["api"] == "/cgi-bin/gettoken" and failures.failures[0]["attempts"] == 2


@pytest.mark.asyncio
async def test_non_idempotent_call_not_retried_after_5xx(fake: FakeWeCom, make_client: MakeClient) -> None:
    fake.http_fail_next("externalcontact/add_msg_template", 502)
    with pytest.raises(WeComTransientError):
        await make_client().add_msg_template_group(["wrChat1"], "zhangsan", "本周读书会周六晚八点")
    assert fake.calls_to("externalcontact/add_msg_template") == 1 and fake.msg_templates == []


@pytest.mark.asyncio
async def test_wrong_secret_is_permanent(fake: FakeWeCom, make_client: MakeClient,
                                         failures: MemoryFailureRecorder) -> None:
    with pytest.raises(WeComAPIError) as err:
        await make_client(corp_secret="wrong").groupchat_get("wrChat1")
    assert err.value.errcode == 40001 and err.value.api == "/cgi-bin/gettoken"
    assert fake.gettoken_calls == 1 and fake.calls_to(GROUPCHAT) == 0
    assert failures.failures[0]["api"] == "/cgi-bin/gettoken"


@pytest.mark.asyncio
async def test_50_concurrent_calls_fetch_one_token(fake: FakeWeCom, make_client: MakeClient) -> None:
    fake.latency = 0.02
    client = make_client()
    chats = await asyncio.gather(*(client.groupchat_get("wrChat1") for _ in range(50)))
    assert len(chats) == 50 and fake.gettoken_calls == 1


@pytest.mark.asyncio
async def test_two_processes_racing_fetch_one_token(fake: FakeWeCom, make_client: MakeClient) -> None:
    fake.latency = 0.05
    a, b = make_client(), make_client()  # separate clients on one store act as separate processes
    await asyncio.gather(*(c.groupchat_get("wrChat1") for c in (a, b) for _ in range(25)))
    assert fake.gettoken_calls == 1


@pytest.mark.asyncio
async def test_stuck_lease_falls_back_to_own_fetch(fake: FakeWeCom, make_client: MakeClient,
                                                   store: MemoryTokenStore) -> None:
    client = make_client()
    client.lease_wait_seconds = 0.2
    assert await store.try_lock(f"{client.token_key}:refresh", 60)  # a crashed process holds it
    assert (await client.groupchat_get("wrChat1"))["chat_id"] == "wrChat1"
    assert fake.gettoken_calls == 1


@pytest.mark.asyncio
async def test_groupchat_get_returns_seeded_data(fake: FakeWeCom, make_client: MakeClient) -> None:
    chat = await make_client().groupchat_get("wrChat1")
    assert chat["owner"] == "zhangsan" and chat["admin_list"] == [{"userid": "lisi"}]
    assert [(m["userid"], m["type"], m["name"]) for m in chat["member_list"]] == [
        ("zhangsan", 1, "zhangsan"), ("wmGuest1", 2, "wmGuest1")]
    assert chat["member_list"][1]["invitor"] == {"userid": "zhangsan"} and chat["member_version"]


@pytest.mark.asyncio
async def test_send_text_truncates_on_a_character_boundary(fake: FakeWeCom, make_client: MakeClient) -> None:
    content = "a" + "你" * 1000  # 3001 bytes; 682 characters of 3 bytes fit after the "a"
    await make_client().send_text("zhangsan", content)
    sent = fake.sent_messages[0]
    assert sent["text"]["content"] == "a" + "你" * 682
    assert len(sent["text"]["content"].encode()) == 2047
    assert sent["agentid"] == fake.agent_id and sent["enable_duplicate_check"] == 1
    assert truncate_utf8("ok", 2048) == "ok" and truncate_utf8("é", 1) == ""


@pytest.mark.asyncio
async def test_send_text_to_invalid_users_raises_81013(fake: FakeWeCom, make_client: MakeClient) -> None:
    fake.invalid_users = {"gone1", "gone2"}
    client = make_client()
    assert (await client.send_text("gone1|zhangsan", "hi"))["invaliduser"] == "gone1"
    with pytest.raises(WeComAPIError) as err:
        await client.send_text("gone1|gone2", "hi")
    assert err.value.errcode == 81013


@pytest.mark.asyncio
async def test_appchat_and_msg_template(fake: FakeWeCom, make_client: MakeClient) -> None:
    client = make_client()
    await client.appchat_send_text("appchat1", "x" * 3000)
    assert len(fake.appchat_messages[0]["text"]["content"]) == 2048
    result = await client.add_msg_template_group(["wrChat1", "wrUnknown"], "zhangsan", "周六见")
    assert result["msgid"] == fake.msg_templates[0]["msgid"] and result["fail_list"] == ["wrUnknown"]


@pytest.mark.asyncio
async def test_welcome_template_lifecycle(fake: FakeWeCom, make_client: MakeClient) -> None:
    client = make_client()
    tid = await client.welcome_template_add("欢迎 %NICKNAME% 入群")
    assert fake.welcome_templates[tid]["text"]["content"] == "欢迎 %NICKNAME% 入群"
    await client.welcome_template_edit(tid, "欢迎 %NICKNAME%！")
    assert (await client.welcome_template_get(tid))["text"] == {"content": "欢迎 %NICKNAME%！"}
    await client.welcome_template_delete(tid)
    assert fake.welcome_templates == {}
    with pytest.raises(WeComAPIError):
        await client.welcome_template_get(tid)
    with pytest.raises(ValueError):
        await client.welcome_template_add("长" * 1001)  # 3003 bytes


@pytest.mark.asyncio
async def test_token_and_secret_never_logged(fake: FakeWeCom, make_client: MakeClient,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="qunbot.wecom_api")
    client = make_client()
    token = await client.get_access_token()
    fake.fail_next(GROUPCHAT, 42001)
    fake.fail_next("message/send", -1)
    await client.groupchat_get("wrChat1")
    await client.send_text("zhangsan", "hi")
    new_token = await client.get_access_token()
    with pytest.raises(WeComAPIError) as err:
        await client.groupchat_get("wrNoSuchChat")
    dumped = caplog.text + " ".join(str(vars(r)) for r in caplog.records) + str(err.value)
    assert caplog.records, "expected some logs"
    for secret in (token, new_token, fake.corp_secret):
        assert secret not in dumped
