"""Play WeCom in tests: build encrypted, signed callbacks as the platform sends them."""

from __future__ import annotations

import secrets
import time

from bot.channels.wecom_crypto import CallbackCrypto

# The official sample's test vectors (../shared/docs/platform.md §2).
TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
CORP_ID = "ww1436e0e65a779aee"


def wecom_env(**extra: object) -> dict[str, object]:
    """The wecom config section for tests (secrets would come from the environment in production)."""
    return {"enabled": True, "corp_id": CORP_ID, "token": TOKEN, "encoding_aes_key": AES_KEY, **extra}


def crypto(receive_id: str = CORP_ID) -> CallbackCrypto:
    return CallbackCrypto(TOKEN, AES_KEY, receive_id, replay_window_seconds=0)


def callback(xml: str, *, timestamp: str | None = None, nonce: str | None = None,
             receive_id: str = CORP_ID) -> tuple[dict[str, str], bytes]:
    """(query params, body) of an encrypted POST callback carrying `xml`."""
    nonce = nonce or secrets.token_hex(5)
    encrypted, signature, ts = crypto(receive_id).encrypt(xml, nonce, timestamp or str(int(time.time())))
    body = f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>"
    return {"msg_signature": signature, "timestamp": ts, "nonce": nonce}, body.encode()


def text_xml(msg_id: str | int, content: str = "你好", user: str = "zhangsan", created: int | None = None) -> str:
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
            f"<CreateTime>{created or int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId><AgentID>1000002</AgentID></xml>")


def chat_change_xml(chat_id: str, change: str, detail: str = "", members: list[str] | None = None, *,
                    join_scene: int = 0, quit_scene: int = 0, created: int | None = None,
                    comma_list: bool = False, mem_ver: str = "") -> str:
    members = members or []
    if comma_list:
        mem = f"<MemChangeList><![CDATA[{','.join(members)}]]></MemChangeList>"
    else:
        mem = "<MemChangeList>" + "".join(f"<Item><![CDATA[{m}]]></Item>" for m in members) + "</MemChangeList>"
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
            f"<CreateTime>{created or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[{chat_id}]]></ChatId>"
            f"<ChangeType><![CDATA[{change}]]></ChangeType><UpdateDetail><![CDATA[{detail}]]></UpdateDetail>"
            f"<JoinScene>{join_scene}</JoinScene><QuitScene>{quit_scene}</QuitScene>"
            f"<MemChangeCnt>{len(members)}</MemChangeCnt>{mem}"
            f"<LastMemVer>a</LastMemVer><CurMemVer>{mem_ver}</CurMemVer></xml>")
