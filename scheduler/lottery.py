"""The due-draw job: draws lotteries at their deadline and announces draws, once across all processes.

Every process runs the job (an APScheduler interval job; the database is the source of truth). Each
lottery is claimed with a conditional UPDATE and a lease (storage.lottery.claim), so of several processes
one draws it; a drawer that crashed between claiming and finishing is replaced when its lease runs out,
and a draw recorded but never announced (the process died, or it was drawn from the command line, which
has no doors) is announced by the next run. Announcing is at least once: a crash after posting and before
marking it announced posts it again after the lease.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.dispatcher import DIRECT_SCOPE
from bot.events import Reply
from storage import lottery as store
from storage.db import utcnow
from storage.groups import Group

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger("qunbot.lottery")
JOB_ID = "lottery-due-draws"


async def start_due_draw_job(runtime: Runtime) -> None:
    """Register the interval job on the runtime's scheduler (a start-up hook); the first run is now."""
    holder = runtime.new_holder()
    runtime.scheduler.add_job(run_due_draws, "interval", seconds=runtime.config.lottery.job_interval_seconds,
                              args=[runtime, holder], id=JOB_ID, replace_existing=True, max_instances=1,
                              coalesce=True, next_run_time=datetime.now(UTC))


async def run_due_draws(runtime: Runtime, holder: str) -> int:
    """Draw and announce every lottery that is due and not taken by another process; how many it handled."""
    handled = 0
    for lottery_id in await store.due_lotteries(runtime.db, utcnow()):
        try:
            if await draw_and_announce(runtime, lottery_id, holder):
                handled += 1
        except Exception:
            log.exception("scheduled lottery draw failed", extra={"lottery": lottery_id})
    return handled


async def draw_and_announce(runtime: Runtime, lottery_id: int, holder: str) -> bool:
    """Claim one due lottery; draw it if it is not drawn yet, then announce it. False if someone else has it."""
    cfg = runtime.config.lottery
    lottery = await store.claim(runtime.db, lottery_id, holder=holder, lease_seconds=cfg.lease_seconds, now=utcnow())
    if lottery is None:
        return False
    if lottery.status == store.DRAWING:
        drawn = await store.record_draw(runtime.db, lottery_id, holder=holder, actor="scheduler", now=utcnow(),
                                        keep_lease=True)
        if not drawn:
            return False
        log.info("lottery drawn", extra={"lottery": lottery_id, "holder": holder})
    from handlers.lottery import announcement

    reply = await announcement(runtime.db, runtime.templates, lottery_id)
    async with runtime.db.session() as session:
        fresh = await store.get_lottery(session, lottery_id)
    assert fresh is not None
    try:
        await publish_draw(runtime, fresh, reply)
    except Exception:
        log.exception("lottery announcement failed; retried after the lease", extra={"lottery": lottery_id})
        await store.announce_failed(runtime.db, lottery_id, holder)
        return True
    await store.mark_announced(runtime.db, lottery_id, holder, utcnow())
    return True


async def publish_draw(runtime: Runtime, lottery: store.Lottery, reply: Reply, *, only_direct: bool = False) -> None:
    """Post the announcement where the lottery's door allows it.

    A group the door can post into gets it with @-mentions; in a door's 1:1 scope the winners get it
    directly (the door's post sends it to each mentioned user); elsewhere (e.g. WeCom customer groups)
    nothing can be posted and the result waits for 抽奖 结果. `only_direct`: an admin's draw command, whose
    reply already announced it in the group.
    """
    async with runtime.db.session() as session:
        group = await session.get(Group, lottery.group_id)
    assert group is not None
    channel = runtime.channels.get(group.channel)
    fields = {"lottery": lottery.id, "channel": group.channel, "group": group.external_id}
    if channel is None:
        raise RuntimeError(f"the {group.channel} door is not enabled in this process")
    if group.external_id == DIRECT_SCOPE:
        if reply.mentions:
            try:
                await channel.post(DIRECT_SCOPE, [reply])
            except NotImplementedError:
                log.info("lottery result kept for 抽奖 结果: the door cannot message winners", extra=fields)
        return
    if only_direct:
        return
    if channel.capabilities.can_post_proactively:
        await channel.post(group.external_id, [reply])
        log.info("lottery announced", extra=fields)
        return
    log.info("lottery result kept for 抽奖 结果: the door cannot post into this group", extra=fields)
