"""Play WeCom's smart bot (智能机器人) in tests: encrypted JSON callbacks in, decrypted passive replies out."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from bot.channels.wecom_crypto import CallbackCrypto
from tests.wecom_helpers import AES_KEY, TOKEN

PATH = "/wecom/smartbot"
BOT_ID = "aibXXXXTEST"


def smartbot_env(**extra: object) -> dict[str, object]:
    """The smartbot config section for tests (the secrets would come from the environment).

    The reply budget is the longest WeCom allows unless a test is about running out of it: a test expecting an
    inline answer must not fail because parallel CI starved a fresh bot's first message for 2 s."""
    return {"enabled": True, "token": TOKEN, "encoding_aes_key": AES_KEY, "reply_budget_seconds": 4.5, **extra}


def crypto(receive_id: str = "") -> CallbackCrypto:
    return CallbackCrypto(TOKEN, AES_KEY, receive_id, replay_window_seconds=0)


def encrypt(payload: dict[str, Any] | str, *, timestamp: str | None = None, nonce: str | None = None,
            receive_id: str = "") -> tuple[dict[str, str], bytes]:
    """(query params, body) of a callback carrying `payload` as WeCom sends it: {"encrypt": ...}."""
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    nonce = nonce or secrets.token_hex(5)
    encrypted, signature, ts = crypto(receive_id).encrypt(text, nonce, timestamp or str(int(time.time())))
    return {"msg_signature": signature, "timestamp": ts, "nonce": nonce}, json.dumps({"encrypt": encrypted}).encode()


def message(msgid: str, content: str = "@机器人 帮助", *, user: str = "zhangsan", chatid: str | None = "wrGroup1",
            msgtype: str = "text", response_url: str | None = None, bot_id: str = BOT_ID,
            **extra: Any) -> dict[str, Any]:
    """A message callback (the plaintext, as the long connection carries it too): a group @-mention when
    `chatid` is given, else a 1:1 message."""
    body: dict[str, Any] = {"msgid": msgid, "aibotid": bot_id, "chattype": "group" if chatid else "single",
                            "from": {"userid": user}, "msgtype": msgtype}
    if chatid:
        body["chatid"] = chatid
    if response_url:
        body["response_url"] = response_url
    if msgtype == "text":
        body["text"] = {"content": content}
    elif msgtype == "voice":
        body["voice"] = {"content": content}
    return {**body, **extra}


def refresh(stream_id: str, *, msgid: str = "", user: str = "zhangsan", chatid: str | None = "wrGroup1") -> dict[str, Any]:
    """A stream refresh callback for `stream_id`."""
    body: dict[str, Any] = {"msgid": msgid or secrets.token_hex(8), "aibotid": BOT_ID,
                            "chattype": "group" if chatid else "single", "from": {"userid": user},
                            "msgtype": "stream", "stream": {"id": stream_id}}
    if chatid:
        body["chatid"] = chatid
    return body


def enter_chat(msgid: str, user: str = "zhangsan", *, bot_id: str = BOT_ID) -> dict[str, Any]:
    return {"msgid": msgid, "create_time": int(time.time()), "aibotid": bot_id, "chattype": "single",
            "from": {"userid": user}, "msgtype": "event", "event": {"eventtype": "enter_chat"}}


def open_reply(body: bytes) -> dict[str, Any] | None:
    """The passive reply's payload, after checking its signature; None for an empty answer."""
    if not body:
        return None
    outer = json.loads(body)
    assert set(outer) == {"encrypt", "msgsignature", "timestamp", "nonce"}, outer
    assert isinstance(outer["timestamp"], int)
    plain = crypto().open(outer["msgsignature"], str(outer["timestamp"]), outer["nonce"], outer["encrypt"])
    return json.loads(plain)


async def post(bot: Any, payload: dict[str, Any] | str, path: str = PATH, **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
    """Send a callback to a bot; (HTTP status, decrypted reply or None)."""
    params, body = encrypt(payload, **kwargs)
    async with bot.http.post(bot.url(path), params=params, data=body) as resp:
        raw = await resp.read()
        return resp.status, (open_reply(raw) if resp.status == 200 else None)
