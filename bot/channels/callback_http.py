"""HTTP edges every encrypted WeCom door shares: strict query parameters, a bounded body, 4xx + a log line."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bot.channels.wecom_crypto import Rejected


async def read_body(request: web.Request, limit: int, timeout_seconds: float) -> bytes:
    """The request body, refused if declared or found larger than `limit`, or not complete in time."""
    if request.content_length is not None and request.content_length > limit:
        raise Rejected(413, f"body of {request.content_length} bytes exceeds {limit}")
    if request.content.is_eof() and request.content_length is not None:
        return await request.read()  # already received whole (the usual case): no timer needed
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_seconds):
            while chunk := await request.content.read(16384):
                size += len(chunk)
                if size > limit:
                    raise Rejected(413, f"body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Rejected(408, f"body not complete within {timeout_seconds:g} s") from None
    return b"".join(chunks)


def query_params(request: web.Request, *names: str) -> dict[str, str]:
    """The named query parameters; each must be present and short."""
    values = {}
    for name in names:
        value = request.query.get(name, "")
        if not value or len(value) > 4096:
            raise Rejected(400, f"missing or oversized query parameter {name}")
        values[name] = value
    return values


def reject(request: web.Request, exc: Rejected, door_log: logging.Logger, message: str) -> web.Response:
    """Answer a refused callback with its status and log why on the door's logger (never the payload)."""
    door_log.warning(message, extra={"path": request.path, "status": exc.status, "reason": exc.reason,
                                "peer": request.remote})
    response = web.Response(status=exc.status, text="rejected")
    if exc.status in (408, 413):
        response.force_close()  # the rest of the body is not worth reading
    return response
