"""Scheduled posts to WeCom customer groups: add_msg_template tasks, created and followed by one process.

The outbox queues each customer-group delivery (WeComAppChannel.queue_post: the owner, the rendered text,
the group's slot of the per-period cap) and leaves it `awaiting`. This job, in whichever process holds its
database lease, then
1. creates the tasks: a run's queued deliveries, once its fan-out has settled, by (owner, text) in chunks of
   at most 2000 groups, one add_msg_template call each. The task is recorded, and its deliveries given to it,
   before the call (storage.wecom_push.open_task), so no two processes create one for the same groups; a
   call whose outcome is unknown (timeout, 5xx, the process died) is never repeated: its deliveries are
   recorded failed with that reason rather than risk the owner getting the task twice;
2. follows the open tasks every `wecom.group_msg_check_seconds`: get_groupmsg_task says whether the owner
   sent it, get_groupmsg_send_result how it went for each group (sent, with WeCom's send time, or failed
   with the reason). A task still unsent after `wecom.group_msg_confirm_hours` is cancelled at WeCom
   (cancel_groupmsg_send) and its deliveries recorded failed.
Failed deliveries give back their group's slot of the cap period and their day's slot of push.daily_cap.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from bot.channels.wecom_api import MSG_TEMPLATE_MAX_CHATS, WeComAPIError, WeComTransientError
from storage import wecom_push as store
from storage.db import utcnow
from storage.groups import Group
from storage.kv import try_lease

if TYPE_CHECKING:
    from bot.channels.wecom import WeComAppChannel

log = logging.getLogger("qunbot.wecom.push")

# add_msg_template may take this long (the client's tries with backoff) before a 'creating' task whose
# process stopped answering is recorded as outcome unknown.
CREATE_LEASE_SECONDS = 300.0
# Calls refused before WeCom did anything (busy, rate limited) are tried again at the next passes, this often.
MAX_CREATE_TRIES = 3
SENT = 2  # get_groupmsg_task: the sender sent it
# What creating one task came to.
CREATED, FAILED, BUSY = "created", "failed", "busy"


def describe(exc: WeComAPIError) -> str:
    """An API error for a delivery's reason: the call, errcode and message (without WeCom's hint and link)."""
    message = exc.errmsg.split(", hint:")[0]
    code = f"errcode {exc.errcode}" if exc.errcode is not None else "no answer"
    return f"{exc.api.removeprefix('/cgi-bin/')} {code}: {message}"


class GroupMsgJob:
    """Creates and follows the add_msg_template tasks of scheduled posts; one process at a time (a lease)."""

    def __init__(self, door: WeComAppChannel) -> None:
        self.door = door
        self.cfg = door.cfg
        self.lease = f"wecom:{self.cfg.corp_id}:group-msg"

    @property
    def db(self) -> Any:
        return self.door.runtime.db

    async def loop(self) -> None:
        """Every `wecom.group_msg_poll_seconds`: a pass in the process holding the lease."""
        while True:
            await asyncio.sleep(self.cfg.group_msg_poll_seconds)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("customer-group task pass failed")

    async def run_once(self, now: datetime | None = None) -> bool:
        """One pass, if this process holds (or takes) the lease: create due tasks, follow open ones. False if
        another process holds it. `now` pins the clock (tests)."""
        ttl = max(60.0, 3 * self.cfg.group_msg_poll_seconds)
        if not await try_lease(self.db, self.lease, self.door.lease_holder, ttl):
            return False
        await self.create_tasks(now or utcnow())
        await self.check_tasks(now or utcnow())
        return True

    # -- creating --------------------------------------------------------------------------------------

    async def create_tasks(self, now: datetime) -> int:
        """Tasks for the queued deliveries of settled runs; how many were created."""
        client = self.door.runtime.wecom
        if client is None:
            return 0
        created = 0
        batches = await store.ready_batches(self.db, channel=self.door.name, now=now,
                                            settle_seconds=self.cfg.group_msg_batch_seconds)
        for batch in batches:
            for start in range(0, len(batch.targets), MSG_TEMPLATE_MAX_CHATS):
                chunk = batch.targets[start:start + MSG_TEMPLATE_MAX_CHATS]
                task_id = await store.open_task(self.db, run_id=batch.run_id, sender=batch.sender, text=batch.text,
                                                delivery_ids=[d for d, _ in chunk], holder=self.door.lease_holder,
                                                now=now, lease_seconds=CREATE_LEASE_SECONDS)
                if task_id is None:  # another process took these deliveries first
                    continue
                outcome = await self._create(client, task_id, batch, [c for _, c in chunk], now)
                if outcome == BUSY:  # WeCom is busy or throttling: the rest waits for the next pass
                    return created
                created += outcome == CREATED
        return created

    async def _create(self, client: Any, task_id: int, batch: store.Batch, chats: list[str], now: datetime) -> str:
        fields = {"task": task_id, "run": batch.run_id, "sender": batch.sender, "groups": len(chats)}
        try:
            answer = await client.add_msg_template_group(chats, batch.sender, batch.text)
        except WeComTransientError as exc:
            if exc.maybe_done:
                await store.task_failed(self.db, task_id, f"add_msg_template outcome unknown ({describe(exc)}): not "
                                        "tried again, so that the owner never gets the task twice; see the WeCom "
                                        "admin console", now)
            else:
                await store.task_released(self.db, task_id, describe(exc), now, max_tries=MAX_CREATE_TRIES)
            log.warning("add_msg_template failed", extra={**fields, "error": describe(exc), "unsure": exc.maybe_done})
            return FAILED if exc.maybe_done else BUSY
        except WeComAPIError as exc:
            await store.task_failed(self.db, task_id, f"add_msg_template refused: {describe(exc)}", now)
            log.warning("add_msg_template refused", extra={**fields, "error": describe(exc)})
            return FAILED
        except ValueError as exc:  # refused by the client before any call (text too long)
            await store.task_failed(self.db, task_id, f"add_msg_template not called: {exc}", now)
            return FAILED
        msgid = str(answer.get("msgid") or "")
        if not msgid:
            await store.task_failed(self.db, task_id, "add_msg_template answered without a msgid", now)
            return FAILED
        refused = {str(chat): f"WeCom refused this group for owner {batch.sender} (add_msg_template fail_list); "
                              "its owner is read again for the next post" for chat in answer.get("fail_list") or []}
        if refused:  # the owner we knew may be stale (the group changed hands): read it again next time
            async with self.db.session() as session:
                await session.execute(update(Group).where(Group.channel == self.door.name,
                                                          Group.external_id.in_(list(refused)))  # type: ignore[attr-defined]
                                      .values(owner=None))
        expires = now + timedelta(hours=self.cfg.group_msg_confirm_hours)
        note = (f"awaiting confirmation by the group owner {batch.sender} in the WeCom client: task {msgid}, created "
                f"{now:%Y-%m-%d %H:%M} UTC, given up at {expires:%Y-%m-%d %H:%M} UTC")
        await store.task_opened(self.db, task_id, msgid=msgid, refused=refused, note=note, now=now, expires_at=expires,
                                next_check_at=now + timedelta(seconds=self.cfg.group_msg_check_seconds))
        log.info("add_msg_template task created", extra={**fields, "msgid": msgid, "refused": len(refused)})
        return CREATED

    # -- following -------------------------------------------------------------------------------------

    async def check_tasks(self, now: datetime) -> int:
        """Look at the open tasks that are due (and 'creating' ones whose creator stopped); how many."""
        client = self.door.runtime.wecom
        tasks = await store.due_tasks(self.db, now)
        for task in tasks:
            assert task.id is not None
            if task.status == store.CREATING:
                await store.task_failed(self.db, task.id, "add_msg_template outcome unknown: the process creating "
                                        "the task stopped before WeCom's answer was recorded; not tried again, so "
                                        "that the owner never gets the task twice", now)
                log.warning("add_msg_template task abandoned by its creator", extra={"task": task.id})
            elif client is not None:
                await self._check(client, task, now)
        return len(tasks)

    async def _sent(self, client: Any, task: store.WeComGroupMsgTask) -> bool:
        rows = await client.groupmsg_task(task.msgid)
        return any(r.get("userid") == task.sender and r.get("status") == SENT for r in rows)

    async def _check(self, client: Any, task: store.WeComGroupMsgTask, now: datetime) -> None:
        assert task.id is not None and task.msgid is not None
        fields = {"task": task.id, "msgid": task.msgid, "sender": task.sender}
        check = timedelta(seconds=self.cfg.group_msg_check_seconds)
        expires = task.expires_at or now
        try:
            sent = await self._sent(client, task)
            if not sent and now >= expires:
                try:
                    await client.cancel_groupmsg_send(task.msgid)
                except WeComAPIError as exc:
                    log.warning("cancel_groupmsg_send failed", extra={**fields, "error": describe(exc)})
                sent = await self._sent(client, task)  # sent just before the cancel?
                if not sent:
                    hours = self.cfg.group_msg_confirm_hours
                    failed = await store.task_failed(
                        self.db, task.id, f"not confirmed by the group owner {task.sender} within {hours:g} h: task "
                        f"{task.msgid} cancelled at WeCom", now, status=store.EXPIRED)
                    log.warning("add_msg_template task expired unconfirmed", extra={**fields, "deliveries": failed})
                    return
            if not sent:
                await store.check_later(self.db, task.id, at=min(now + check, expires), now=now)
                return
            results = {str(r["chat_id"]): r for r in await client.groupmsg_send_result(task.msgid, task.sender)
                       if r.get("chat_id")}
        except WeComTransientError as exc:
            log.warning("task state unavailable, checked again later", extra={**fields, "error": describe(exc)})
            await store.check_later(self.db, task.id, at=now + check, now=now)
            return
        except WeComAPIError as exc:
            await store.task_failed(self.db, task.id, f"outcome unknown: WeCom refused to tell the state of task "
                                    f"{task.msgid} ({describe(exc)})", now)
            log.warning("task state refused", extra={**fields, "error": describe(exc)})
            return
        sent_count, failed = await store.task_results(
            self.db, task.id, results, sent_note=f"sent by the group owner {task.sender} (task {task.msgid})", now=now)
        log.info("add_msg_template task sent by its owner", extra={**fields, "sent": sent_count, "failed": failed})
