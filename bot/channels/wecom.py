"""The WeCom self-built app door: encrypted XML callbacks in, app messages and template syncs out.

The endpoint acknowledges as soon as the event is durably in the inbox (well within WeCom's 5 s) and
processes it in the background; WeCom's retries and copies reaching other processes find the inbox row
and stop there.

Scheduled posts: app chats the app created (listed in `wecom.appchat_ids`) get them straight away with
appchat/send; customer groups (客户群) only as add_msg_template tasks their owner confirms in the WeCom
client (`queue_post` here, the tasks in bot.channels.wecom_push).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import update

from bot.channels import callback_reply
from bot.channels.base import Capabilities, Channel, PostFailed, PostSkipped, QueuedPost
from bot.channels.callback_http import query_params, read_body, reject
from bot.channels.wecom_crypto import CallbackCrypto, Rejected, parse_xml
from bot.events import (
    Event,
    GroupCreated,
    GroupDismissed,
    MemberJoined,
    MemberLeft,
    Person,
    Reply,
    TextMessage,
)
from bot.inbox import InboxUnavailable
from storage import wecom_push as push_store
from storage import welcome as welcome_store
from storage.db import utcnow
from storage.groups import Group
from storage.kv import DbFailureRecorder, DbTokenStore, release_lease, try_lease

log = logging.getLogger("qunbot.wecom")

# Event JoinScene / QuitScene (change_external_chat) and groupchat/get join_scene, in our words.
EVENT_JOIN_SCENES = {"0": "invited", "3": "qrcode"}
QUIT_SCENES = {"0": "left", "1": "removed"}
MEMBER_JOIN_SCENES = {1: "invited", 2: "link", 3: "qrcode"}
MEMBER_KINDS = {1: "staff", 2: "external"}


class WeComAppChannel(Channel):
    """Self-built app callbacks: 1:1 messages to the app and customer-group (客户群) membership events."""

    name = "wecom"
    title = "WeCom self-built app"
    reaches = "1:1 chats with the app; customer-group join/leave events"
    capabilities = Capabilities(
        can_reply=True,  # 1:1 through message/send
        # Not into customer groups, its groups: only app chats it created (posts_directly: wecom.appchat_ids).
        can_post_proactively=False,
        confirmed_posts=True,  # customer groups: add_msg_template tasks their owner sends from the WeCom client
        sees_joins=True,
        posts_welcome=False,  # no API posts a per-join message into a customer group
        welcome_template=True,  # group_welcome_template is kept in sync instead
        mentions=False,
        markdown=False,
        images=False,
    )

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        cfg = runtime.config.wecom
        self.cfg = cfg
        self.crypto = CallbackCrypto(cfg.token, cfg.encoding_aes_key, cfg.corp_id, cfg.replay_window_seconds)
        # Who holds our leases (token refresh, template sync). runtime.instance (host:pid) alone is not
        # unique: containers on the host network can share both, and so do two runtimes in one process.
        self.lease_holder = runtime.new_holder()
        self.appchats = frozenset(cfg.appchat_ids)
        from bot.channels.wecom_push import GroupMsgJob

        self.group_msgs = GroupMsgJob(self)

    async def stop(self) -> None:
        await super().stop()
        try:  # another process takes the customer-group task job over at once instead of after the lease
            await release_lease(self.runtime.db, self.group_msgs.lease, self.lease_holder)
        except Exception:
            log.exception("could not release the customer-group task job's lease")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.cfg.callback_path, self.verify_url)
        app.router.add_post(self.cfg.callback_path, self.callback)

    async def start(self) -> None:
        if self.cfg.corp_secret and self.runtime.http is not None:
            from bot.channels.wecom_api import WeComClient

            self.runtime.wecom = WeComClient(
                self.runtime.http, base_url=self.cfg.api_base_url, corp_id=self.cfg.corp_id,
                corp_secret=self.cfg.corp_secret, tokens=DbTokenStore(self.runtime.db, self.lease_holder),
                failures=DbFailureRecorder(self.runtime.db), agent_id=self.cfg.agent_id,
            )
            self.spawn(self.group_msgs.loop(), name="wecom-group-msg")

    # -- HTTP ------------------------------------------------------------------------------------

    async def verify_url(self, request: web.Request) -> web.Response:
        """URL verification: answer the decrypted echostr as the raw body."""
        return await callback_reply.verify_url(request, self.crypto, log)

    async def callback(self, request: web.Request) -> web.Response:
        try:
            q = query_params(request, "msg_signature", "timestamp", "nonce")
            self.crypto.check_timestamp(q["timestamp"])
            body = await read_body(request, self.cfg.max_body_bytes, self.cfg.body_timeout_seconds)
            outer = parse_xml(body)
            encrypted = outer.get("Encrypt")
            if not isinstance(encrypted, str) or not encrypted:
                raise Rejected(400, "no Encrypt element")
            self.crypto.check_signature(q["msg_signature"], q["timestamp"], q["nonce"], encrypted)
            message = parse_xml(self.crypto.decrypt(encrypted))
            events = events_from_message(message)
        except Rejected as exc:
            return reject(request, exc, log, "callback rejected")
        if not events:
            log.info("callback ignored", extra={"msg_type": message.get("MsgType"), "event": message.get("Event"),
                                                 "change_type": message.get("ChangeType")})
            return web.Response(text="success")
        for event in events:
            try:
                inbox_id = await self.runtime.inbox.accept(event)
            except InboxUnavailable:
                # Not stored: answer an error so WeCom retries rather than losing the event.
                return web.Response(status=503, text="busy")
            if inbox_id is None:
                log.info("duplicate callback", extra={"event_key": event.key, "group": event.group})
            else:
                self.runtime.inbox.process_soon(event)
        return web.Response(text="success")

    # -- pipeline --------------------------------------------------------------------------------

    async def enrich(self, event: Event) -> Event:
        """Names, join scene, inviter and member type from groupchat/get (the event carries only ids)."""
        client = self.runtime.wecom
        if not isinstance(event, MemberJoined) or client is None or not self.cfg.enrich_members or not event.group:
            return event
        try:
            chat = await client.groupchat_get(event.group)
        except Exception as exc:  # recorded by the client; the join is still kept with what we know
            log.warning("groupchat/get failed; join recorded without details",
                        extra={"group": event.group, "event_id": event.id, "error": str(exc)})
            return event
        details = {m.get("userid"): m for m in chat.get("member_list", [])}
        people = []
        for person in event.members:
            info = details.get(person.user, {})
            people.append(Person(
                person.user,
                info.get("group_nickname") or info.get("name") or person.name,
                scene=MEMBER_JOIN_SCENES.get(info.get("join_scene")) or person.scene,
                inviter=(info.get("invitor") or {}).get("userid") or person.inviter,
                kind=MEMBER_KINDS.get(info.get("type")),
            ))
        event.members = people
        event.group_name = chat.get("name") or event.group_name
        admins = {a.get("userid"): "admin" for a in chat.get("admin_list") or [] if a.get("userid")}
        if chat.get("owner"):
            admins[chat["owner"]] = "owner"
        event.admins = admins
        return event

    async def deliver(self, event: Event, replies: list[Reply]) -> None:
        client = self.runtime.wecom
        if isinstance(event, TextMessage) and event.group is None:
            if client is None:
                raise RuntimeError("replies need wecom.corp_secret (QUNBOT_WECOM_CORP_SECRET) for message/send")
            for reply in replies:
                await client.send_text(event.sender.user, reply.text)
            return
        log.warning("reply dropped: this door cannot post into a customer group",
                    extra={"event_id": event.id, "group": event.group, "replies": len(replies)})

    def posts_directly(self, group: str) -> bool:
        return group in self.appchats

    async def post(self, group: str, replies: list[Reply]) -> None:
        """Into an app chat (appchat/send); in the 1:1 scope each reply goes 1:1 (message/send) to the users it
        mentions.

        Customer groups cannot take proactive posts (add_msg_template waits for the owner: `queue_post`).
        """
        from bot.dispatcher import DIRECT_SCOPE

        if group in self.appchats:
            await self._post_appchat(group, replies)
            return
        if group != DIRECT_SCOPE:
            log.warning("post dropped: this door cannot post into a customer group on its own",
                        extra={"group": group, "replies": len(replies)})
            raise NotImplementedError("the wecom door cannot post into a customer group on its own")
        client = self.runtime.wecom
        if client is None:
            raise RuntimeError("1:1 messages need wecom.corp_secret (QUNBOT_WECOM_CORP_SECRET) for message/send")
        for reply in replies:
            if reply.mentions:
                await client.send_text("|".join(reply.mentions), reply.text)

    async def _post_appchat(self, chat_id: str, replies: list[Reply]) -> None:
        """appchat/send, within the app's limits per minute and day (WeCom drops the excess without an error)."""
        from bot.channels.wecom_api import WeComAPIError, WeComTransientError
        from bot.channels.wecom_push import describe

        client = self.runtime.wecom
        if client is None:
            raise PostFailed("app chat posts need wecom.corp_secret (QUNBOT_WECOM_CORP_SECRET)", permanent=True)
        cfg = self.cfg
        limits = {"per_minute": cfg.appchat_per_minute, "per_day": cfg.appchat_per_day}
        for reply in replies:
            now = utcnow()
            wait = await push_store.take_appchat_send(self.runtime.db, now, **limits)
            if wait is not None:
                raise PostFailed(f"appchat/send limit reached ({cfg.appchat_per_minute} a minute, "
                                 f"{cfg.appchat_per_day} a day)", retry_after=wait)
            try:
                await client.appchat_send_text(chat_id, reply.text)
            except WeComAPIError as exc:
                transient = isinstance(exc, WeComTransientError)
                if not (transient and exc.maybe_done):  # refused: nothing was posted, so nothing counts
                    await push_store.give_back_appchat_send(self.runtime.db, now, **limits)
                if transient and exc.errcode in (45009, 45033):
                    raise PostFailed(describe(exc), retry_after=60.0) from exc
                raise PostFailed(describe(exc), permanent=not transient) from exc

    async def queue_post(self, post: QueuedPost, replies: list[Reply]) -> str:
        """A customer group's scheduled post: queued for an add_msg_template task to the group's owner, taking
        the group's slot of the per-period cap (`wecom.group_msg_cap`); the task is created and followed by
        bot.channels.wecom_push."""
        from zoneinfo import ZoneInfo

        from bot.channels.wecom_api import MSG_TEMPLATE_TEXT_LIMIT_BYTES
        from bot.dispatcher import DIRECT_SCOPE

        if post.group == DIRECT_SCOPE:
            raise PostSkipped("the wecom door's 1:1 scope is no group")
        if self.runtime.wecom is None:
            raise PostFailed("customer-group posts need wecom.corp_secret (QUNBOT_WECOM_CORP_SECRET)", permanent=True)
        text = "\n\n".join(r.text for r in replies if r.text)
        size = len(text.encode("utf-8"))
        if not text or size > MSG_TEMPLATE_TEXT_LIMIT_BYTES:
            raise PostFailed(f"a customer-group post takes 1 to {MSG_TEMPLATE_TEXT_LIMIT_BYTES} bytes of text, this "
                             f"one has {size}", permanent=True)
        owner, tz = await self._owner(post.group_id, post.group)
        cfg = self.cfg
        day = post.now.astimezone(ZoneInfo(tz)).date()
        period = push_store.cap_period(day, cfg.group_msg_cap_period)
        if not await push_store.stage(self.runtime.db, delivery_id=post.delivery_id, run_id=post.run_id,
                                      group_id=post.group_id, chat_id=post.group, sender=owner, text=text,
                                      now=post.now, cap=cfg.group_msg_cap, period=period):
            raise PostSkipped(f"WeCom customer-group cap reached: {cfg.group_msg_cap} mass messages per "
                              f"{cfg.group_msg_cap_period} ({period}, {tz}) already sent or awaiting confirmation")
        return f"queued for an add_msg_template task to the group owner {owner}"

    async def _owner(self, group_id: int, chat_id: str) -> tuple[str, str]:
        """The customer group's owner (who must send its mass messages) and the group's timezone. The owner
        is read with groupchat/get when the bot does not know it, and kept on the group row."""
        from bot.channels.wecom_api import WeComAPIError, WeComTransientError
        from bot.channels.wecom_push import describe

        async with self.runtime.db.read_session() as session:
            group = await session.get(Group, group_id)
        tz = (group.timezone if group else None) or self.runtime.config.timezone
        if group is not None and group.owner:
            return group.owner, tz
        try:
            chat = await self.runtime.wecom.groupchat_get(chat_id)  # type: ignore[union-attr]
        except WeComTransientError as exc:
            raise PostFailed(f"the group's owner is unknown: {describe(exc)}") from exc
        except WeComAPIError as exc:
            raise PostFailed(f"the group's owner is unknown: {describe(exc)}", permanent=True) from exc
        owner = str(chat.get("owner") or "")
        if not owner:
            raise PostFailed("the group's owner is unknown: groupchat/get names none", permanent=True)
        async with self.runtime.db.session() as session:
            await session.execute(update(Group).where(Group.id == group_id).values(owner=owner))
        return owner, tz

    async def sync_welcome_template(self, text: str, attempts: int = 5) -> None:
        """Make the corp's group welcome template say `text`; one process does it, retried on failure."""
        client = self.runtime.wecom
        if client is None or not self.cfg.sync_welcome_template:
            return
        key = f"wecom:{self.cfg.corp_id}:welcome"
        digest = hashlib.sha256(text.encode()).hexdigest()
        for attempt in range(1, attempts + 1):
            if not await try_lease(self.runtime.db, key, self.lease_holder, 60):
                return  # another process is syncing
            try:
                async with self.runtime.db.session() as session:
                    known = await welcome_store.get_platform_template(session, key)
                if known and known.content_hash == digest:
                    return
                if known:
                    await client.welcome_template_edit(known.template_id, text)
                    template_id = known.template_id
                else:
                    template_id = await client.welcome_template_add(text)
                async with self.runtime.db.session() as session:
                    await welcome_store.save_platform_template(session, key, template_id, digest)
                log.info("welcome template synced", extra={"template_id": template_id, "attempt": attempt})
                return
            except Exception as exc:
                log.warning("welcome template sync failed", extra={"attempt": attempt, "error": str(exc)})
            finally:
                await release_lease(self.runtime.db, key, self.lease_holder)
            await asyncio.sleep(min(60.0, 2.0**attempt))


def events_from_message(message: dict[str, object]) -> list[Event]:
    """Common events from a decrypted app callback; [] for kinds the bot does not handle."""
    get = lambda k: str(message.get(k) or "")  # noqa: E731
    msg_type, created = get("MsgType"), get("CreateTime")
    at = datetime.fromtimestamp(int(created), UTC) if created.isdigit() else datetime.now(UTC)
    if msg_type == "text":
        if not get("MsgId"):
            raise Rejected(400, "text message without MsgId")
        return [TextMessage("wecom", f"msg:{get('MsgId')}", None, at, sender=Person(get("FromUserName")),
                            text=get("Content"), mentioned=True)]
    if msg_type != "event" or get("Event") != "change_external_chat":
        return []
    chat_id, change, detail = get("ChatId"), get("ChangeType"), get("UpdateDetail")
    if not chat_id:
        raise Rejected(400, "change_external_chat without ChatId")
    members = message.get("MemChangeList") or []
    if isinstance(members, str):  # older payloads: one comma-joined string
        members = [m for m in members.split(",") if m]
    people = [Person(str(m).strip()) for m in members if str(m).strip()]
    # Events have no id: FromUserName + CreateTime + the event's own fields identify a delivery.
    key = ":".join(["evt", get("FromUserName"), created, chat_id, change, detail,
                    get("CurMemVer") or hashlib.sha1(",".join(p.user for p in people).encode()).hexdigest()[:16]])  # noqa: S324
    if change == "create":
        return [GroupCreated("wecom", key, chat_id, at)]
    if change == "dismiss":
        return [GroupDismissed("wecom", key, chat_id, at)]
    if change == "update" and detail == "add_member" and people:
        return [MemberJoined("wecom", key, chat_id, at, members=people,
                             scene=EVENT_JOIN_SCENES.get(get("JoinScene")))]
    if change == "update" and detail == "del_member" and people:
        return [MemberLeft("wecom", key, chat_id, at, members=people, scene=QUIT_SCENES.get(get("QuitScene")))]
    return []
