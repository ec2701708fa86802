"""Async client for WeCom's server API (qyapi): a shared access token, retries, and loud failures.

Facts it relies on (docs/platform.md §6): gettoken is rate limited, so the token is cached where every
process sees it and refreshed ahead of expiry; 40014 / 42001 / 40001 mean "fetch a new token and try
once more"; 45009 / 45033 / -1 are worth retrying with backoff; anything else is permanent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json as jsonlib
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, NoReturn, Protocol

import aiohttp

log = logging.getLogger("qunbot.wecom_api")

TOKEN_ERRCODES = frozenset({40014, 42001, 40001})  # invalid / expired token, invalid credential
RETRYABLE_ERRCODES = frozenset({-1, 45009, 45033})  # system busy, frequency limit, concurrency limit
TEXT_LIMIT_BYTES = 2048  # message/send and appchat/send text.content
WELCOME_TEXT_LIMIT_BYTES = 3000  # group_welcome_template text.content
MSG_TEMPLATE_MAX_CHATS = 2000  # add_msg_template chat_id_list
MSG_TEMPLATE_TEXT_LIMIT_BYTES = 4000  # add_msg_template text.content (the API's page; not in platform.md)
GROUPMSG_PAGE_LIMIT = 1000  # get_groupmsg_task / get_groupmsg_send_result: most rows per page
GETTOKEN_PATH = "/cgi-bin/gettoken"


class TokenStore(Protocol):
    """Where access tokens live so that every process shares one (the real one is DB-backed)."""

    async def load_token(self, key: str) -> tuple[str, datetime] | None: ...
    async def save_token(self, key: str, token: str, expires_at: datetime) -> None: ...
    async def drop_token(self, key: str, token: str) -> None: ...
    async def try_lock(self, name: str, ttl_seconds: float) -> bool: ...
    async def unlock(self, name: str) -> None: ...


class FailureRecorder(Protocol):
    """Where final API failures are recorded for operators."""

    async def record_api_failure(self, *, api: str, errcode: int | None, errmsg: str, attempts: int,
                                 detail: str) -> None: ...


class WeComAPIError(Exception):
    """A WeCom call that failed for good. `errcode` is None when WeCom gave no errcode (HTTP, network)."""

    def __init__(self, api: str, errcode: int | None, errmsg: str, *, attempts: int = 1) -> None:
        super().__init__(f"{api} failed: errcode={errcode} errmsg={errmsg} attempts={attempts}")
        self.api = api
        self.errcode = errcode
        self.errmsg = errmsg
        self.attempts = attempts


class WeComTransientError(WeComAPIError):
    """A failure that might succeed later (busy, rate limited, network, 5xx): retries were exhausted.

    `maybe_done`: the last try may have taken effect (a timeout, a dropped connection, a 5xx), so repeating a
    call that is not idempotent could do it twice; False when WeCom refused it before doing anything.
    """

    maybe_done = False


class MemoryTokenStore:
    """In-process TokenStore for tests and simulator mode (clients sharing it act like processes)."""

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, datetime]] = {}
        self.leases: dict[str, float] = {}

    async def load_token(self, key: str) -> tuple[str, datetime] | None:
        """Return the stored (token, expires_at) for `key`, if any."""
        return self.tokens.get(key)

    async def save_token(self, key: str, token: str, expires_at: datetime) -> None:
        """Store a token for `key`, replacing any previous one."""
        self.tokens[key] = (token, expires_at)

    async def drop_token(self, key: str, token: str) -> None:
        """Forget the token for `key`, but only if it is still `token`."""
        if self.tokens.get(key, ("",))[0] == token:
            del self.tokens[key]

    async def try_lock(self, name: str, ttl_seconds: float) -> bool:
        """Take the lease `name` for `ttl_seconds` unless someone holds an unexpired one."""
        now = time.monotonic()
        if self.leases.get(name, 0.0) > now:
            return False
        self.leases[name] = now + ttl_seconds
        return True

    async def unlock(self, name: str) -> None:
        """Release the lease `name`."""
        self.leases.pop(name, None)


class MemoryFailureRecorder:
    """In-process FailureRecorder: keeps every failure as a dict in `failures`."""

    def __init__(self) -> None:
        self.failures: list[dict[str, Any]] = []

    async def record_api_failure(self, *, api: str, errcode: int | None, errmsg: str, attempts: int,
                                 detail: str) -> None:
        """Remember one final API failure."""
        self.failures.append({"api": api, "errcode": errcode, "errmsg": errmsg, "attempts": attempts,
                              "detail": detail})


def truncate_utf8(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` UTF-8 bytes without splitting a character."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    # Only the cut can leave a partial character, and only at the end; "ignore" drops exactly that.
    return raw[:limit].decode("utf-8", "ignore")


def token_fingerprint(token: str) -> str:
    """A short, non-reversible tag for a token, safe to log."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def normalize_api(api_path: str) -> str:
    """Turn "message/send", "cgi-bin/message/send" or "/cgi-bin/message/send" into the last form."""
    path = api_path.strip().lstrip("/")
    if not path.startswith("cgi-bin/"):
        path = "cgi-bin/" + path
    return "/" + path


class _Kind(Enum):
    OK = "ok"
    REFETCH = "refetch"  # the access token was refused: fetch a new one, try once more
    RETRY = "retry"  # refused before doing anything: always safe to retry
    UNSURE = "unsure"  # may or may not have been done (timeout, 5xx): retry only idempotent calls
    PERMANENT = "permanent"


@dataclass
class _Outcome:
    kind: _Kind
    data: dict[str, Any] = field(default_factory=dict)
    errcode: int | None = None
    errmsg: str = ""


class WeComClient:
    """WeCom server-API client for one app (corp_id + secret), safe to share between tasks."""

    lease_poll_seconds = 0.05

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str, corp_id: str, corp_secret: str,
                 tokens: TokenStore, failures: FailureRecorder, agent_id: int | None = None,
                 refresh_ahead_seconds: float = 300, max_attempts: int = 4, backoff_base: float = 0.5,
                 backoff_max: float = 8.0, timeout: float = 10.0) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._corp_id = corp_id
        self._secret = corp_secret
        self._tokens = tokens
        self._failures = failures
        self.agent_id = agent_id
        self._refresh_ahead = timedelta(seconds=refresh_ahead_seconds)
        self._max_attempts = max(1, max_attempts)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # Two apps of one corp have different secrets and tokens: the secret's hash keeps them apart.
        self.token_key = f"wecom:{corp_id}:{hashlib.sha256(corp_secret.encode()).hexdigest()[:12]}"
        self._lease_name = f"{self.token_key}:refresh"
        self.lease_ttl_seconds = timeout * 2 + 1
        # How long to wait for another process's refresh before fetching ourselves.
        self.lease_wait_seconds = min(timeout, 5.0)
        self._local: tuple[str, datetime] | None = None
        self._refresh_lock = asyncio.Lock()

    # ---- access token -------------------------------------------------------------------------

    def _fresh(self, cached: tuple[str, datetime] | None) -> bool:
        return cached is not None and datetime.now(UTC) < cached[1] - self._refresh_ahead

    async def get_access_token(self) -> str:
        """Return a usable access token: cached if fresh, else refreshed by one process for all."""
        if self._local is not None and self._fresh(self._local):
            return self._local[0]
        cached = await self._tokens.load_token(self.token_key)
        if cached is not None and self._fresh(cached):
            self._local = cached
            return cached[0]
        return await self._refresh(stale=cached[0] if cached else None)

    async def _load_usable(self, stale: str | None) -> str | None:
        """The stored token if fresh, or if it is a live new one someone fetched while we waited."""
        cached = await self._tokens.load_token(self.token_key)
        if cached is None:
            return None
        token, expires_at = cached
        if self._fresh(cached) or (token != stale and datetime.now(UTC) < expires_at):
            self._local = cached
            return token
        return None

    async def _refresh(self, stale: str | None) -> str:
        async with self._refresh_lock:  # one refresher per process; the lease covers other processes
            if (token := await self._load_usable(stale)) is not None:
                return token
            deadline = time.monotonic() + self.lease_wait_seconds
            while True:
                if await self._tokens.try_lock(self._lease_name, self.lease_ttl_seconds):
                    try:
                        if (token := await self._load_usable(stale)) is not None:
                            return token
                        return await self._fetch_token()
                    finally:
                        await self._tokens.unlock(self._lease_name)
                await asyncio.sleep(self.lease_poll_seconds)
                if (token := await self._load_usable(stale)) is not None:
                    return token
                if time.monotonic() >= deadline:
                    log.warning("token lease wait timed out, fetching ourselves",
                                extra={"key": self.token_key, "waited_s": self.lease_wait_seconds})
                    return await self._fetch_token()

    async def _fetch_token(self) -> str:
        data = await self._execute(GETTOKEN_PATH, "GET", None,
                                   {"corpid": self._corp_id, "corpsecret": self._secret},
                                   idempotent=True, use_token=False)
        token, expires_in = data.get("access_token"), data.get("expires_in")
        if not isinstance(token, str) or not token:
            await self._fail(GETTOKEN_PATH, _Outcome(_Kind.PERMANENT, errmsg="answer without access_token"), 1)
        if not isinstance(expires_in, int | float):
            await self._fail(GETTOKEN_PATH, _Outcome(_Kind.PERMANENT, errmsg="answer without expires_in"), 1)
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
        await self._tokens.save_token(self.token_key, token, expires_at)
        self._local = (token, expires_at)
        log.info("access token fetched", extra={"key": self.token_key, "token_sha": token_fingerprint(token),
                                                "expires_in": expires_in})
        return token

    async def _invalidate(self, token: str) -> None:
        if self._local and self._local[0] == token:
            self._local = None
        await self._tokens.drop_token(self.token_key, token)

    # ---- calls --------------------------------------------------------------------------------

    async def call(self, api_path: str, *, json: dict[str, Any] | None = None,
                   params: dict[str, Any] | None = None, method: str = "POST",
                   idempotent: bool = True) -> dict[str, Any]:
        """Call a WeCom API with the access token; return its answer (errcode 0) or raise WeComAPIError.

        `idempotent=False` stops retries after failures that may have taken effect (timeout, dropped
        connection, 5xx), for calls whose repetition would be visible (e.g. a second owner task).
        """
        return await self._execute(normalize_api(api_path), method.upper(), json, params,
                                   idempotent=idempotent, use_token=True)

    async def _execute(self, api: str, method: str, body: dict[str, Any] | None,
                       params: dict[str, Any] | None, *, idempotent: bool, use_token: bool) -> dict[str, Any]:
        attempts = 0
        failures = 0
        token_retried = False
        started = time.monotonic()
        while True:
            token = await self.get_access_token() if use_token else None
            attempts += 1
            out = await self._attempt(api, method, body, params, token)
            if out.kind is _Kind.OK:
                log.debug("wecom call ok", extra={"api": api, "attempts": attempts,
                                                  "elapsed_ms": round((time.monotonic() - started) * 1000)})
                return out.data
            if out.kind is _Kind.REFETCH and not token_retried:
                token_retried = True
                log.warning("token refused, refetching", extra={"api": api, "errcode": out.errcode,
                                                                "token_sha": token_fingerprint(token or "")})
                await self._invalidate(token or "")
                continue
            retryable = out.kind is _Kind.RETRY or (out.kind is _Kind.UNSURE and idempotent)
            if retryable and attempts < self._max_attempts + token_retried:
                failures += 1
                delay = min(self._backoff_max, self._backoff_base * 2 ** (failures - 1))
                delay = random.uniform(delay / 2, delay)  # jitter: spread out processes that failed together
                log.warning("wecom call failed, retrying", extra={
                    "api": api, "errcode": out.errcode, "errmsg": out.errmsg, "attempt": attempts,
                    "delay_s": round(delay, 3)})
                await asyncio.sleep(delay)
                continue
            await self._fail(api, out, attempts)

    async def _attempt(self, api: str, method: str, body: dict[str, Any] | None,
                       params: dict[str, Any] | None, token: str | None) -> _Outcome:
        query = {k: str(v) for k, v in (params or {}).items()}
        if token is not None:
            query["access_token"] = token
        try:
            async with self._session.request(method, self._base_url + api, params=query, json=body,
                                             timeout=self._timeout) as resp:
                status = resp.status
                raw = await resp.read()
        except aiohttp.ClientConnectorError as exc:  # never reached the server
            return _Outcome(_Kind.RETRY, errmsg=self._redact(f"{type(exc).__name__}: {exc}", token))
        except (TimeoutError, aiohttp.ClientError) as exc:
            return _Outcome(_Kind.UNSURE, errmsg=self._redact(f"{type(exc).__name__}: {exc}", token))
        if status >= 500:
            return _Outcome(_Kind.UNSURE, errmsg=f"HTTP {status}")
        if status != 200:
            return _Outcome(_Kind.PERMANENT, errmsg=f"HTTP {status}")
        try:
            data = jsonlib.loads(raw)  # WeCom sometimes labels JSON as text/plain: ignore the header
        except ValueError:
            return _Outcome(_Kind.UNSURE, errmsg="answer is not JSON")
        if not isinstance(data, dict) or not isinstance(data.get("errcode"), int):
            return _Outcome(_Kind.PERMANENT, errmsg="answer without errcode")
        errcode, errmsg = data["errcode"], self._redact(str(data.get("errmsg", "")), token)
        if errcode == 0:
            return _Outcome(_Kind.OK, data=data)
        if errcode in TOKEN_ERRCODES and token is not None:
            return _Outcome(_Kind.REFETCH, data, errcode, errmsg)
        if errcode in RETRYABLE_ERRCODES:
            return _Outcome(_Kind.RETRY, data, errcode, errmsg)
        return _Outcome(_Kind.PERMANENT, data, errcode, errmsg)

    def _redact(self, text: str, token: str | None) -> str:
        for secret in (token, self._secret):
            if secret:
                text = text.replace(secret, "<redacted>")
        return text

    async def _fail(self, api: str, out: _Outcome, attempts: int) -> NoReturn:
        transient = out.kind in (_Kind.RETRY, _Kind.UNSURE)
        detail = f"{out.kind.value} failure after {attempts} attempt(s)"
        log.error("wecom call failed", extra={"api": api, "errcode": out.errcode, "errmsg": out.errmsg,
                                              "attempts": attempts, "transient": transient})
        try:
            await self._failures.record_api_failure(api=api, errcode=out.errcode, errmsg=out.errmsg,
                                                    attempts=attempts, detail=detail)
        except Exception:
            # The API error below matters more than a broken recorder; don't let one hide the other.
            log.exception("could not record api failure", extra={"api": api})
        if transient:
            error = WeComTransientError(api, out.errcode, out.errmsg, attempts=attempts)
            error.maybe_done = out.kind is _Kind.UNSURE
            raise error
        raise WeComAPIError(api, out.errcode, out.errmsg, attempts=attempts)

    # ---- API methods --------------------------------------------------------------------------

    async def groupchat_get(self, chat_id: str) -> dict[str, Any]:
        """Details and members of a customer group (the `group_chat` object of groupchat/get)."""
        data = await self.call("externalcontact/groupchat/get", json={"chat_id": chat_id, "need_name": 1})
        return data["group_chat"]

    async def send_text(self, touser: str, content: str, *,
                        duplicate_check_seconds: int | None = 60) -> dict[str, Any]:
        """Send an app text message to users ("a|b" or "@all"); content is cut to 2048 UTF-8 bytes.

        WeCom's duplicate check (on by default) makes a retry after a timeout harmless.
        """
        if self.agent_id is None:
            raise ValueError("send_text needs the client's agent_id")
        body: dict[str, Any] = {"touser": touser, "msgtype": "text", "agentid": self.agent_id,
                                "text": {"content": self._cut(content, "message/send")}, "safe": 0}
        if duplicate_check_seconds:
            body |= {"enable_duplicate_check": 1, "duplicate_check_interval": duplicate_check_seconds}
        data = await self.call("message/send", json=body, idempotent=bool(duplicate_check_seconds))
        if data.get("invaliduser"):
            log.warning("message/send skipped invalid users",
                        extra={"invalid_count": len(str(data["invaliduser"]).split("|"))})
        return data

    async def appchat_send_text(self, chatid: str, content: str) -> dict[str, Any]:
        """Post text into a group the app created (appchat); content is cut to 2048 UTF-8 bytes."""
        body = {"chatid": chatid, "msgtype": "text", "text": {"content": self._cut(content, "appchat/send")},
                "safe": 0}
        return await self.call("appchat/send", json=body, idempotent=False)

    async def welcome_template_add(self, text: str) -> str:
        """Create a customer-group welcome template (text may hold %NICKNAME%); return its template_id."""
        data = await self.call("externalcontact/group_welcome_template/add",
                               json={"text": {"content": self._check_welcome(text)}}, idempotent=False)
        return str(data["template_id"])

    async def welcome_template_edit(self, template_id: str, text: str) -> None:
        """Replace the text of a welcome template."""
        await self.call("externalcontact/group_welcome_template/edit",
                        json={"template_id": template_id, "text": {"content": self._check_welcome(text)}})

    async def welcome_template_get(self, template_id: str) -> dict[str, Any]:
        """Return a welcome template's content (text, attachments) without errcode/errmsg."""
        data = await self.call("externalcontact/group_welcome_template/get", json={"template_id": template_id})
        return {k: v for k, v in data.items() if k not in ("errcode", "errmsg")}

    async def welcome_template_delete(self, template_id: str) -> None:
        """Delete a welcome template."""
        await self.call("externalcontact/group_welcome_template/del", json={"template_id": template_id})

    async def add_msg_template_group(self, chat_ids: list[str], sender: str, text: str) -> dict[str, Any]:
        """Create a customer-group mass-message task; nothing is sent until `sender` confirms in the client.

        Returns {"msgid", "fail_list"}.
        """
        if not chat_ids or len(chat_ids) > MSG_TEMPLATE_MAX_CHATS:
            raise ValueError(f"chat_ids must hold 1..{MSG_TEMPLATE_MAX_CHATS} ids, got {len(chat_ids)}")
        size = len(text.encode("utf-8"))
        if size > MSG_TEMPLATE_TEXT_LIMIT_BYTES:
            # Cut, a post would go out unreadable to every group: refuse it instead.
            raise ValueError(f"text is {size} bytes, add_msg_template takes {MSG_TEMPLATE_TEXT_LIMIT_BYTES}")
        body = {"chat_type": "group", "chat_id_list": list(chat_ids), "sender": sender,
                "text": {"content": text}}
        data = await self.call("externalcontact/add_msg_template", json=body, idempotent=False)
        return {"msgid": data.get("msgid"), "fail_list": data.get("fail_list", [])}

    async def groupmsg_task(self, msgid: str) -> list[dict[str, Any]]:
        """Who was asked to send a mass-message task and whether they did: every page of get_groupmsg_task's
        `task_list` ({"userid", "status": 0 not sent / 2 sent, "send_time" once sent})."""
        return await self._pages("externalcontact/get_groupmsg_task", {"msgid": msgid}, "task_list")

    async def groupmsg_send_result(self, msgid: str, userid: str) -> list[dict[str, Any]]:
        """One sender's result per target: every page of get_groupmsg_send_result's `send_list` (for a
        customer-group task {"chat_id", "userid", "status", "send_time"}; status 0 not sent, 1 sent, 2 not
        sent: not a contact, 3 not sent: the target already received its share of mass messages)."""
        return await self._pages("externalcontact/get_groupmsg_send_result", {"msgid": msgid, "userid": userid},
                                 "send_list")

    async def cancel_groupmsg_send(self, msgid: str) -> None:
        """Stop a mass-message task its senders have not sent yet (they can no longer send it)."""
        await self.call("externalcontact/cancel_groupmsg_send", json={"msgid": msgid})

    async def _pages(self, api: str, body: dict[str, Any], key: str, *, max_pages: int = 100) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(max_pages):
            data = await self.call(api, json={**body, "limit": GROUPMSG_PAGE_LIMIT, **({"cursor": cursor} if cursor else {})})
            rows += [r for r in data.get(key) or [] if isinstance(r, dict)]
            cursor = str(data.get("next_cursor") or "")
            if not cursor:
                return rows
        raise WeComAPIError(normalize_api(api), None, f"more than {max_pages} pages")

    @staticmethod
    def _cut(content: str, api: str) -> str:
        cut = truncate_utf8(content, TEXT_LIMIT_BYTES)
        if cut != content:
            log.warning("text truncated", extra={"api": api, "bytes": len(content.encode()),
                                                 "limit": TEXT_LIMIT_BYTES})
        return cut

    @staticmethod
    def _check_welcome(text: str) -> str:
        # A silently cut welcome would go unnoticed for months: refuse it instead.
        size = len(text.encode("utf-8"))
        if size > WELCOME_TEXT_LIMIT_BYTES:
            raise ValueError(f"welcome text is {size} bytes, WeCom allows {WELCOME_TEXT_LIMIT_BYTES}")
        return text
