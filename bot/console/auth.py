"""Console security: password hashes, the session cookie, CSRF and Origin checks, the login rate limit.

Passwords: scrypt from the standard library (hashlib.scrypt; n=2**15, r=8, p=1, 32 MiB of memory and
about 0.1 s per hash here), with a 16-byte random salt, stored as
"scrypt$15$8$1$<salt b64>$<hash b64>" so the parameters can be raised later without breaking old hashes.
scrypt is memory-hard like argon2 and needs no extra dependency. Hashing runs in a thread, off the loop.
An unknown username is checked against a dummy hash, so the answer takes as long as for a real one.

Sessions: the cookie holds 32 random bytes (URL-safe base64); the database keeps only their SHA-256,
with the user, an absolute expiry (console.session_hours), the last request (console.idle_minutes) and
a CSRF token. Cookie: HttpOnly, SameSite (console.same_site), Path=/console, Secure when
console.secure_cookie. Logout deletes the row; a password change deletes all of the user's rows.

CSRF: every request that is not GET/HEAD must carry the session's token in the X-CSRF-Token header (the
page's script reads it from /console/api/me or the page's <meta>), compared in constant time; and when
the browser sends Origin (or, failing that, Referer), it must be this host or one of
console.allowed_origins. A cross-site form can neither read the token nor set the header.

Login rate limit: failures are rows (console_login_attempts), counted per username since its last
success and per client address within console.login_window_seconds; at the limit the answer is 429 with
Retry-After, before any password is checked. Two processes count the same rows.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from aiohttp import web

from bot.config import ConsoleConfig
from storage import console as store
from storage.db import Database, utcnow

log = logging.getLogger("qunbot.console")

COOKIE = "qunbot_console"
COOKIE_PATH = "/console"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# How often a session's last request is written (a write per request would be wasted).
TOUCH_EVERY = timedelta(seconds=60)

_SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN = 15, 8, 1, 32


# -- passwords --------------------------------------------------------------------------------------


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, length: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=128 * r * (n + p + 2) + 1024 * 1024)


def hash_password(password: str) -> str:
    """A new salted scrypt hash of the password (slow on purpose: call it off the event loop)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_LOG2_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether the password matches the stored hash (constant-time comparison); False for a malformed hash."""
    try:
        kind, log2_n, r, p, salt, digest = encoded.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), int(log2_n), int(r), int(p), len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


_dummy_hash: str | None = None


async def check_password(password: str, encoded: str | None) -> bool:
    """verify_password in a thread; with no stored hash (unknown user) it spends the same time and fails."""
    global _dummy_hash
    if encoded is None:
        if _dummy_hash is None:
            _dummy_hash = await asyncio.to_thread(hash_password, secrets.token_hex(16))
        await asyncio.to_thread(verify_password, password, _dummy_hash)
        return False
    return await asyncio.to_thread(verify_password, password, encoded)


def password_rule_broken(password: str, config: ConsoleConfig) -> str | None:
    """Which rule a new password breaks ("password_short", "password_long", "password_spaces"), or None."""
    if len(password) < config.min_password_length:
        return "password_short"
    if len(password) > 1024:
        return "password_long"
    if password.strip() != password:
        return "password_spaces"
    return None


def password_problem(password: str, config: ConsoleConfig) -> str | None:
    """Why a new password is refused (English, for the CLI), or None."""
    return {"password_short": f"the password must be at least {config.min_password_length} characters long",
            "password_long": "the password is longer than 1024 characters",
            "password_spaces": "the password must not start or end with spaces",
            None: None}[password_rule_broken(password, config)]


# -- client address, origin -------------------------------------------------------------------------


def client_ip(request: web.Request, config: ConsoleConfig) -> str:
    if config.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    return (request.remote or "")[:64]


def origin_allowed(request: web.Request, config: ConsoleConfig) -> bool:
    """For a state-changing request: the browser's Origin (or Referer) is this host or an allowed origin.
    A request with neither (not a browser, e.g. curl) passes here; it still needs the CSRF token."""
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        if not referer:
            return True
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    origin = origin.strip().lower()
    if origin == "null":
        return False
    if origin in config.allowed_origins:
        return True
    host = request.headers.get("Host", "").strip().lower()
    return bool(host) and urlsplit(origin).netloc == host


def csrf_ok(request: web.Request, expected: str) -> bool:
    given = request.headers.get(CSRF_HEADER, "")
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


# -- sessions ---------------------------------------------------------------------------------------


def session_token(request: web.Request) -> str | None:
    token = request.cookies.get(COOKIE)
    return token if token and len(token) <= 128 else None


async def current_session(db: Database, request: web.Request, config: ConsoleConfig) -> store.LiveSession | None:
    """The request's live session (the cookie's), its last request noted at most once a minute."""
    token = session_token(request)
    if token is None:
        return None
    idle = timedelta(minutes=config.idle_minutes) if config.idle_minutes > 0 else None
    now = utcnow()
    async with db.read_session() as session:
        live = await store.find_session(session, token, idle=idle, now=now)
    if live is not None and now - live.last_seen_at >= TOUCH_EVERY:
        async with db.session() as session:
            await store.touch_session(session, live.token_hash, now)
    return live


def set_cookie(response: web.StreamResponse, token: str, config: ConsoleConfig) -> None:
    response.set_cookie(COOKIE, token, path=COOKIE_PATH, httponly=True, samesite=config.same_site,
                        secure=config.secure_cookie, max_age=int(config.session_hours * 3600))


def clear_cookie(response: web.StreamResponse, config: ConsoleConfig) -> None:
    response.del_cookie(COOKIE, path=COOKIE_PATH, secure=config.secure_cookie, httponly=True,
                        samesite=config.same_site)


# -- login ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    """A login's outcome: a new session (token and CSRF token), refused, or rate-limited for N seconds."""

    token: str | None = None
    csrf_token: str | None = None
    account: store.Account | None = None
    retry_after: int | None = None


async def retry_after(db: Database, config: ConsoleConfig, username: str, ip: str, now: datetime) -> int | None:
    """Seconds until this username and address may try again, or None if they may now."""
    window = timedelta(seconds=config.login_window_seconds)
    async with db.read_session() as session:
        by_name, by_ip = await store.recent_failures(session, username=username, ip=ip, since=now - window)
    waits = []
    for failures, limit in ((by_name, config.login_max_failures), (by_ip, config.login_ip_max_failures)):
        if len(failures) >= limit:
            # Free again when the failure that makes the count reach the limit leaves the window.
            waits.append(failures[len(failures) - limit] + window - now)
    if not waits:
        return None
    return max(1, int(max(waits).total_seconds() + 0.999))


async def login(db: Database, config: ConsoleConfig, *, username: str, password: str, ip: str,
                user_agent: str) -> LoginResult:
    """Check the rate limit, then the password; on success a new session row and its tokens."""
    now = utcnow()
    wait = await retry_after(db, config, username, ip, now)
    if wait is not None:
        log.warning("console login rate-limited", extra={"user": store.normalize_username(username), "ip": ip,
                                                          "retry_after": wait})
        return LoginResult(retry_after=wait)
    async with db.read_session() as session:
        user = await store.find_user(session, username)
    ok = await check_password(password, user.password_hash if user is not None else None)
    if not ok or user is None or user.disabled:
        async with db.session() as session:
            await store.record_attempt(session, username=username, ip=ip, success=False, at=now)
        log.warning("console login failed", extra={"user": store.normalize_username(username), "ip": ip,
                                                   "reason": "disabled" if ok and user else "bad credentials"})
        return LoginResult()
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    async with db.session() as session:
        await store.purge_expired(session, keep_attempts=timedelta(seconds=config.login_window_seconds) * 2, now=now)
        await store.record_attempt(session, username=username, ip=ip, success=True, at=now)
        await store.create_session(session, token=token, csrf_token=csrf, user_id=user.id,  # type: ignore[arg-type]
                                   lifetime=timedelta(hours=config.session_hours), ip=ip, user_agent=user_agent)
        account = await store.account(session, user)
    log.info("console login", extra={"user": user.username, "role": user.role, "ip": ip})
    return LoginResult(token=token, csrf_token=csrf, account=account)


async def logout(db: Database, live: store.LiveSession) -> None:
    async with db.session() as session:
        await store.delete_session(session, live.token_hash)
    log.info("console logout", extra={"user": live.account.username})
