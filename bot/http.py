"""Small HTTP helpers shared by the doors."""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

_dumps = functools.partial(json.dumps, ensure_ascii=False)


def json_response(data: Any, *, status: int = 200) -> web.Response:
    """JSON with Chinese kept readable (no \\u escapes)."""
    return web.json_response(data, status=status, dumps=_dumps)
