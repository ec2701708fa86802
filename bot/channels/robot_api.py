"""Async client for WeCom group robot webhooks (群机器人 / 消息推送), rate limited across processes.

Facts it relies on (docs/platform.md §4): `POST {base}/cgi-bin/webhook/send?key=KEY` with a JSON body;
text content ≤ 2048 bytes UTF-8 (mentions in `mentioned_list`), markdown ≤ 4096 bytes (`<@userid>`
mentions), image as base64 + md5 of ≤ 2 MB raw JPG/PNG, news with 1..8 articles, file by a media_id from
`upload_media?key=KEY&type=file` (multipart field `media`); success is errcode 0; each robot takes 20
messages a minute. 45009 means "too often": back off and try again; -1 means "system busy": try again a
few times; anything else is permanent.

The key is the robot's credential (its webhook URL works for anyone who has it): it appears only in the
request URL, never in a log line, an exception or a recorded failure; logs name a robot by `key_tag`.

Every message takes one of the robot's `limit` send slots in the database (storage.robot), so that all
processes together send at most `limit` messages per robot in any window; a send waits for its robot's
next free slot (up to `max_wait_seconds`) instead of failing. Slots are per robot: a fan-out to many
robots never queues behind one lock.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, Protocol

import aiohttp

from storage import robot as store
from storage.db import Database, utcnow

log = logging.getLogger("qunbot.robot_api")

SEND_PATH = "/cgi-bin/webhook/send"
UPLOAD_PATH = "/cgi-bin/webhook/upload_media"
TEXT_LIMIT_BYTES = 2048
MARKDOWN_LIMIT_BYTES = 4096
IMAGE_LIMIT_BYTES = 2 * 1024 * 1024
FILE_MIN_BYTES = 6  # "every file must be larger than 5 bytes"
FILE_LIMIT_BYTES = 20 * 1024 * 1024
NEWS_MAX_ARTICLES = 8
MAX_MENTIONS = 100  # not documented; a sane bound on one message's mentioned_list
BUSY, RATE_LIMITED = -1, 45009
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


class FailureRecorder(Protocol):
    """Where final failures are recorded for operators (storage.kv.DbFailureRecorder)."""

    async def record_api_failure(self, *, api: str, errcode: int | None, errmsg: str, attempts: int,
                                 detail: str) -> None: ...


class RobotSendError(Exception):
    """A webhook call that failed for good. `errcode` is None when WeCom gave none (HTTP, network, no slot)."""

    def __init__(self, api: str, robot: str, errcode: int | None, errmsg: str, *, attempts: int) -> None:
        super().__init__(f"{api} failed for robot {robot}: errcode={errcode} errmsg={errmsg} attempts={attempts}")
        self.api = api
        self.robot = robot
        self.errcode = errcode
        self.errmsg = errmsg
        self.attempts = attempts


class RobotBusyError(RobotSendError):
    """No send slot of the robot came free within max_wait_seconds; `retry_after`: when one will (seconds)."""

    def __init__(self, *args: Any, retry_after: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class NoSlot(TimeoutError):
    """The robot's next slot frees up only after the caller's deadline (in `wait` seconds)."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"no free send slot within the wait limit (next in {wait:.1f} s)")
        self.wait = wait


def key_hash(key: str) -> str:
    """The robot's identity where the key must not appear (send slots, chat rows)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def key_tag(key: str) -> str:
    """A short, non-reversible name for a robot, safe to log."""
    return key_hash(key)[:8]


def truncate_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, never inside a character."""
    raw = text.encode()
    return text if len(raw) <= limit else raw[:limit].decode(errors="ignore")


def utf8_len(text: str) -> int:
    return len(text.encode())


def split_text(text: str, limit: int, max_parts: int) -> list[str]:
    """Text in pieces of at most `limit` UTF-8 bytes, cut at line breaks where possible.

    At most `max_parts` pieces: the last one that fits ends with "…" when something had to be left out.
    """
    if utf8_len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        joined = f"{current}\n{line}" if current else line
        if utf8_len(joined) <= limit:
            current = joined
            continue
        if current:
            parts.append(current)
        while utf8_len(line) > limit:  # a single line longer than a message: cut it where it must be cut
            head = truncate_utf8(line, limit)
            parts.append(head)
            line = line[len(head):]
        current = line
    if current:
        parts.append(current)
    if len(parts) > max_parts:
        parts = parts[:max_parts]
        parts[-1] = truncate_utf8(parts[-1], limit - utf8_len("…")) + "…"
    return parts


# -- send slots ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    key_hash: str
    slot: int
    version: int


class SendSlots:
    """At most `limit` sends per robot in any `window` seconds, for every process sharing the database.

    A reservation marks its slot busy until the send ends (at the latest after `lease` seconds); when it
    ends, the slot's window counts from then. So two sends on one slot are a whole window apart, measured
    from the moment the first was surely over to the moment the second could start.
    """

    poll_jitter = 0.01
    in_flight_poll = 0.1

    def __init__(self, db: Database, *, limit: int, window_seconds: float, lease_seconds: float) -> None:
        self.db = db
        self.limit = limit
        self.window = timedelta(seconds=window_seconds)
        # Clocks of different hosts (and WeCom's) are never exactly alike: keep a little extra distance.
        self.margin = timedelta(seconds=min(1.0, window_seconds * 0.02))
        self.lease = timedelta(seconds=lease_seconds)
        self._ready: set[str] = set()  # robots whose slot rows this process has made sure of (a shortcut only)

    async def acquire(self, robot: str, deadline: float) -> Slot:
        """Wait for and take one of the robot's slots; NoSlot if none is free before `deadline` (monotonic)."""
        while True:
            if robot not in self._ready:
                await store.ensure_slots(self.db, robot, self.limit)
                self._ready.add(robot)
            now = utcnow()
            taken = await store.take_free_slot(self.db, robot, self.limit, free_before=now - self.window - self.margin,
                                               busy_until=now + self.lease)
            if taken is not None:
                return Slot(robot, *taken)
            count, oldest = await store.slot_state(self.db, robot, self.limit)
            if count < self.limit or oldest is None:  # the rows went away (tests truncate tables): make them again
                self._ready.discard(robot)
                continue
            now = utcnow()
            wait = (oldest + self.window + self.margin - now).total_seconds()
            if wait <= 0:
                continue  # freed up meanwhile, or another sender took it first: look again
            if time.monotonic() + wait > deadline:
                raise NoSlot(wait)
            if oldest > now:
                # Every slot is in flight; the first to finish frees up a window after it does, and its end
                # may come any moment: look again soon rather than at the end of its lease.
                wait = min(wait, self.in_flight_poll)
            await asyncio.sleep(wait + random.uniform(0, self.poll_jitter))  # noqa: S311 - spreading wake-ups

    async def release(self, slot: Slot) -> None:
        """The send on `slot` is over (whatever its outcome)."""
        try:
            await store.finish_slot(self.db, slot.key_hash, slot.slot, slot.version, utcnow())
        except Exception:
            # The slot stays busy until its lease runs out: slower, never over the limit.
            log.exception("could not release a robot send slot", extra={"robot": slot.key_hash[:8]})


# -- the client ----------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    ok: bool
    retry: bool = False  # refused before anything was posted: safe to try again
    errcode: int | None = None
    errmsg: str = ""
    data: dict[str, Any] | None = None


class RobotClient:
    """Webhook sends and uploads for any number of robots (each call names its robot's key)."""

    def __init__(self, http: aiohttp.ClientSession, *, base_url: str, slots: SendSlots,
                 failures: FailureRecorder, max_attempts: int = 4, backoff_seconds: float = 1.0,
                 backoff_max_seconds: float = 60.0, max_wait_seconds: float = 300.0,
                 timeout_seconds: float = 10.0) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self.slots = slots
        self._failures = failures
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff_seconds
        self._backoff_max = backoff_max_seconds
        self._max_wait = max_wait_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    # ---- message types -----------------------------------------------------------------------------

    async def send_text(self, key: str, content: str, *, mentioned_list: list[str] | tuple[str, ...] = (),
                        chatid: str | None = None) -> None:
        """A text message (≤ 2048 bytes); `mentioned_list` holds userids or "@all"."""
        if not content:
            raise ValueError("text content is empty")
        if utf8_len(content) > TEXT_LIMIT_BYTES:
            raise ValueError(f"text is {utf8_len(content)} bytes, WeCom takes {TEXT_LIMIT_BYTES}")
        if len(mentioned_list) > MAX_MENTIONS or not all(isinstance(u, str) and u for u in mentioned_list):
            raise ValueError(f"mentioned_list takes 1..{MAX_MENTIONS} non-empty userids")
        text: dict[str, Any] = {"content": content}
        if mentioned_list:
            text["mentioned_list"] = list(mentioned_list)
        await self.send(key, {"msgtype": "text", "text": text}, chatid=chatid)

    async def send_markdown(self, key: str, content: str, *, chatid: str | None = None) -> None:
        """A markdown message (≤ 4096 bytes); `<@userid>` mentions a member."""
        if not content:
            raise ValueError("markdown content is empty")
        if utf8_len(content) > MARKDOWN_LIMIT_BYTES:
            raise ValueError(f"markdown is {utf8_len(content)} bytes, WeCom takes {MARKDOWN_LIMIT_BYTES}")
        await self.send(key, {"msgtype": "markdown", "markdown": {"content": content}}, chatid=chatid)

    async def send_image(self, key: str, data: bytes, *, chatid: str | None = None) -> None:
        """A JPG or PNG image of at most 2 MB."""
        if not data or len(data) > IMAGE_LIMIT_BYTES:
            raise ValueError(f"image is {len(data)} bytes, WeCom takes 1..{IMAGE_LIMIT_BYTES}")
        if not data.startswith(IMAGE_SIGNATURES):
            raise ValueError("image must be a JPG or PNG")
        body = {"msgtype": "image", "image": {"base64": base64.b64encode(data).decode(),
                                               "md5": hashlib.md5(data).hexdigest()}}  # noqa: S324 - WeCom's checksum
        await self.send(key, body, chatid=chatid)

    async def send_news(self, key: str, articles: list[dict[str, str]], *, chatid: str | None = None) -> None:
        """1..8 articles, each {"title", "url"} and optionally "description" and "picurl"."""
        if not 1 <= len(articles) <= NEWS_MAX_ARTICLES:
            raise ValueError(f"news takes 1..{NEWS_MAX_ARTICLES} articles, got {len(articles)}")
        clean = []
        for n, article in enumerate(articles, 1):
            if not article.get("title") or not article.get("url"):
                raise ValueError(f"article {n} needs a title and a url")
            unknown = set(article) - {"title", "description", "url", "picurl"}
            if unknown:
                raise ValueError(f"article {n} has unknown fields: {', '.join(sorted(unknown))}")
            # WeCom cuts longer ones itself; cut here so that what is stored and shown agree.
            clean.append({**article, "title": truncate_utf8(article["title"], 128),
                          **({"description": truncate_utf8(article["description"], 512)}
                             if article.get("description") else {})})
        await self.send(key, {"msgtype": "news", "news": {"articles": clean}}, chatid=chatid)

    async def upload_file(self, key: str, data: bytes, filename: str) -> str:
        """Upload a file (6 bytes .. 20 MB) for this robot; its media_id (valid three days)."""
        if not FILE_MIN_BYTES <= len(data) <= FILE_LIMIT_BYTES:
            raise ValueError(f"file is {len(data)} bytes, WeCom takes {FILE_MIN_BYTES}..{FILE_LIMIT_BYTES}")
        if not filename or "/" in filename or "\\" in filename:
            raise ValueError("file needs a plain file name")
        deadline = time.monotonic() + self._max_wait
        attempts = 0
        while True:
            attempts += 1
            form = aiohttp.FormData()
            form.add_field("media", data, filename=filename, content_type="application/octet-stream")
            out = await self._post(UPLOAD_PATH, key, {"type": "file"}, form=form)
            if out.ok and isinstance((out.data or {}).get("media_id"), str):
                return str(out.data["media_id"])  # type: ignore[index]
            if out.ok:
                out = _Outcome(False, errmsg="answer without media_id")
            if await self._pause_before_retry("webhook/upload_media", key, out, attempts, deadline):
                continue
            await self._fail("webhook/upload_media", key, out, attempts, "file")

    async def send_file(self, key: str, data: bytes, filename: str, *, chatid: str | None = None) -> None:
        """Upload a file and post it."""
        media_id = await self.upload_file(key, data, filename)
        await self.send(key, {"msgtype": "file", "file": {"media_id": media_id}}, chatid=chatid)

    # ---- sending -----------------------------------------------------------------------------------

    async def send(self, key: str, body: dict[str, Any], *, chatid: str | None = None) -> None:
        """Post one message (a webhook/send body); waits for a send slot, retries busy and rate-limited answers.

        Raises RobotSendError (recorded as an API failure) when it fails for good.
        """
        if chatid:
            body = {"chatid": chatid, **body}
        msgtype = str(body.get("msgtype"))
        robot = key_hash(key)
        deadline = time.monotonic() + self._max_wait
        attempts = 0
        while True:
            try:
                slot = await self.slots.acquire(robot, deadline)
            except NoSlot as exc:
                await self._fail("webhook/send", key, _Outcome(False, errmsg=str(exc)), attempts, msgtype,
                                 retry_after=exc.wait)
            attempts += 1
            try:
                out = await self._post(SEND_PATH, key, {}, json_body=body)
            finally:
                await self.slots.release(slot)
            if out.ok:
                log.info("robot message sent", extra={"robot": key_tag(key), "msgtype": msgtype, "attempts": attempts,
                                                      "chatid": chatid})
                return
            if await self._pause_before_retry("webhook/send", key, out, attempts, deadline):
                continue
            await self._fail("webhook/send", key, out, attempts, msgtype)

    async def _pause_before_retry(self, api: str, key: str, out: _Outcome, attempts: int, deadline: float) -> bool:
        """Sleep before another attempt if one is worth it; False if not."""
        if out.errcode == RATE_LIMITED:
            # WeCom counted more than we did (someone else uses the key, or clocks differ): back off, try again.
            delay = min(self._backoff_max, self._backoff * 2 ** min(attempts - 1, 10))
        elif out.retry and attempts < self._max_attempts:
            delay = min(self._backoff_max, self._backoff * 2 ** (attempts - 1))
        else:
            return False
        delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter spreads processes that failed together
        if time.monotonic() + delay > deadline:
            return False
        log.warning("robot call failed, retrying", extra={"api": api, "robot": key_tag(key), "errcode": out.errcode,
                                                          "errmsg": out.errmsg, "attempt": attempts,
                                                          "delay_s": round(delay, 3)})
        await asyncio.sleep(delay)
        return True

    async def _post(self, path: str, key: str, params: dict[str, str], *, json_body: dict[str, Any] | None = None,
                    form: aiohttp.FormData | None = None) -> _Outcome:
        try:
            async with self._http.post(self._base_url + path, params={"key": key, **params}, json=json_body,
                                       data=form, timeout=self._timeout) as resp:
                status = resp.status
                raw = await resp.read()
        except aiohttp.ClientConnectorError as exc:  # never reached WeCom: nothing was posted
            return _Outcome(False, retry=True, errmsg=_redact(f"connect: {exc.os_error or exc}", key))
        except (TimeoutError, aiohttp.ClientError) as exc:
            # It may have been posted: a second try could post it twice, so this is final.
            return _Outcome(False, errmsg=_redact(f"{type(exc).__name__}: {exc}", key))
        if status != 200:
            return _Outcome(False, errmsg=f"HTTP {status}")
        try:
            data = json.loads(raw)
        except ValueError:
            return _Outcome(False, errmsg="answer is not JSON")
        if not isinstance(data, dict) or not isinstance(data.get("errcode"), int):
            return _Outcome(False, errmsg="answer without errcode")
        errcode, errmsg = data["errcode"], _redact(str(data.get("errmsg", ""))[:300], key)
        if errcode == 0:
            return _Outcome(True, data=data)
        return _Outcome(False, retry=errcode == BUSY, errcode=errcode, errmsg=errmsg)

    async def _fail(self, api: str, key: str, out: _Outcome, attempts: int, what: str, *,
                    retry_after: float | None = None) -> NoReturn:
        robot = key_tag(key)
        log.error("robot call failed", extra={"api": api, "robot": robot, "errcode": out.errcode,
                                              "errmsg": out.errmsg, "attempts": attempts, "msgtype": what})
        try:
            await self._failures.record_api_failure(api=api, errcode=out.errcode, errmsg=out.errmsg,
                                                    attempts=attempts, detail=f"robot={robot} msgtype={what}")
        except Exception:
            log.exception("could not record api failure", extra={"api": api, "robot": robot})
        if retry_after is not None:
            raise RobotBusyError(api, robot, out.errcode, out.errmsg, attempts=attempts, retry_after=retry_after)
        raise RobotSendError(api, robot, out.errcode, out.errmsg, attempts=attempts)


def _redact(text: str, key: str) -> str:
    return text.replace(key, "<key>") if key else text
