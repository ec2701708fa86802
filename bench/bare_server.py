"""The baseline: a bare aiohttp handler that only verifies and decrypts a WeCom callback, then answers."""

from __future__ import annotations

import sys

from aiohttp import web

from bot.channels.wecom_crypto import CallbackCrypto, parse_xml
from tests.wecom_helpers import AES_KEY, CORP_ID, TOKEN


def make_app() -> web.Application:
    crypto = CallbackCrypto(TOKEN, AES_KEY, CORP_ID, replay_window_seconds=0)

    async def handle(request: web.Request) -> web.Response:
        q = request.query
        encrypted = str(parse_xml(await request.read())["Encrypt"])
        crypto.check_signature(q["msg_signature"], q["timestamp"], q["nonce"], encrypted)
        crypto.decrypt(encrypted)
        return web.Response(text="success")

    app = web.Application()
    app.router.add_post("/wecom/callback", handle)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
