"""Play WeChat's Official Account platform in tests: signed (and encrypted) XML callbacks in, passive replies out."""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

from bot.channels.official_account import plain_signature
from bot.channels.wecom_crypto import CallbackCrypto, parse_xml
from tests.wecom_helpers import AES_KEY, TOKEN

PATH = "/wechat/mp"
APP_ID = "wx5823bf96d3bd56c7"
ACCOUNT = "gh_7f083739789a"  # the account's original id: ToUserName of what followers send
OTHER_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
MODES = ("plain", "compatible", "safe")
_msg_ids = itertools.count(6_306_264_631_030_309_910)


def oa_env(mode: str = "safe", **extra: object) -> dict[str, object]:
    """The official_account config section for tests (the secrets would come from the environment)."""
    return {"enabled": True, "mode": mode, "app_id": APP_ID, "token": TOKEN, "encoding_aes_key": AES_KEY, **extra}


def new_msg_id() -> str:
    return str(next(_msg_ids))


def text_xml(msg_id: str, content: str, *, openid: str = "oFollower1", created: int | None = None,
             msg_type: str = "text", **extra: str) -> str:
    fields = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in extra.items())
    body = f"<Content><![CDATA[{content}]]></Content>" if msg_type == "text" else ""
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{created or int(time.time())}</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>"
            f"{body}{fields}<MsgId>{msg_id}</MsgId></xml>")


def event_xml(event: str, *, openid: str = "oFollower1", created: int | None = None, **extra: str) -> str:
    fields = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in extra.items())
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{created or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[{event}]]></Event>{fields}</xml>")


def crypto(app_id: str = APP_ID, key: str = AES_KEY) -> CallbackCrypto:
    return CallbackCrypto(TOKEN, key, app_id, replay_window_seconds=0)


def signed(*, timestamp: str | None = None, nonce: str | None = None) -> dict[str, str]:
    """The query WeChat puts on every callback: signature over token, timestamp and nonce."""
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or str(secrets.randbelow(10**9))
    return {"signature": plain_signature(TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}


def request(xml: str, style: str, *, timestamp: str | None = None, app_id: str = APP_ID,
            key: str = AES_KEY) -> tuple[dict[str, str], bytes]:
    """(query, body) of a POST as WeChat sends it for an account in `style` mode.

    plain: the XML as is. compatible: the plaintext fields and <Encrypt> side by side. safe: only <Encrypt>.
    Encrypted requests carry encrypt_type=aes and msg_signature next to the plain signature.
    """
    query = signed(timestamp=timestamp)
    if style == "plain":
        return query, xml.encode()
    ciphertext, msg_signature, _ = crypto(app_id, key).encrypt(xml, query["nonce"], query["timestamp"])
    query.update(encrypt_type="aes", msg_signature=msg_signature)
    encrypt = f"<Encrypt><![CDATA[{ciphertext}]]></Encrypt>"
    if style == "compatible":
        return query, xml.replace("</xml>", encrypt + "</xml>").encode()
    return query, f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>{encrypt}</xml>".encode()


def open_reply(body: bytes, encrypted: bool, key: str = AES_KEY) -> dict[str, Any] | None:
    """The passive reply's fields (its signature checked and decrypted if `encrypted`); None for "success"."""
    if body in (b"success", b""):
        return None
    fields = parse_xml(body)
    if encrypted:
        assert set(fields) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}, fields
        plain = crypto(key=key).open(str(fields["MsgSignature"]), str(fields["TimeStamp"]), str(fields["Nonce"]),
                                     str(fields["Encrypt"]))
        fields = parse_xml(plain)
    else:
        assert "Encrypt" not in fields, fields
    return fields


async def post(bot: Any, xml: str, style: str, **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
    """Send a callback as WeChat would for an account in `style` mode; (HTTP status, reply fields or None)."""
    query, body = request(xml, style, **kwargs)
    async with bot.http.post(bot.url(PATH), params=query, data=body) as resp:
        raw = await resp.read()
        if resp.status != 200:
            return resp.status, None
        return resp.status, open_reply(raw, style != "plain", key=kwargs.get("key", AES_KEY))


async def say(bot: Any, text: str, style: str, *, openid: str = "oFollower1", msg_id: str | None = None) -> str:
    """A follower's text message; the content of the bot's passive reply (fails on anything else)."""
    status, reply = await post(bot, text_xml(msg_id or new_msg_id(), text, openid=openid), style)
    assert status == 200 and reply is not None, (status, reply)
    assert (reply["ToUserName"], reply["FromUserName"], reply["MsgType"]) == (openid, ACCOUNT, "text"), reply
    assert str(reply["CreateTime"]).isdigit()
    return str(reply["Content"])
