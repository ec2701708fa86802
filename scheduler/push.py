"""Scheduled posts at run time: timers (APScheduler), firings recorded as durable runs, and the outbox worker.

The database is the source of truth; APScheduler only says "look now":
- each process keeps one APScheduler job per enabled post, with the post's trigger (cron, interval or
  date, in the post's timezone). A periodic sync job re-reads the posts and rebuilds the jobs of posts
  whose `revision` changed (edits from the CLI, the chat command or another process), removes the jobs
  of posts paused or removed, and catches up;
- a job firing does not trust its own clock tick: it records every firing of the post between the post's
  `covered_until` and now as a run (unique per post and time) with its deliveries, in one transaction,
  then moves `covered_until`. Whoever gets there first (any process, the job, the sync, the catch-up at
  start-up) records a firing; everyone else finds it done. Firings found later than
  `push.late_after_seconds` are marked late, and those older than `push.grace_seconds` are recorded as
  skipped ("missed"), never silently dropped;
- the outbox worker (one per process) claims due deliveries of the doors this process has, sends each
  through the group's door with bounded concurrency, and records the outcome. A claim is a lease: if the
  process dies mid-send, another takes the delivery when the lease (`push.lease_seconds`) runs out, so
  a crash can repeat at most the sends that were in flight; everything else is sent exactly once.
  Deliveries on a door no running process has are left for one that has it, and recorded as skipped
  after `push.unserved_timeout_seconds`. A door whose posts a person confirms (WeCom customer groups) takes
  a delivery over with `queue_post`: it waits as `awaiting` until the door records its outcome.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN
from sqlalchemy import select

from bot.channels.base import PostFailed, PostSkipped, QueuedPost
from bot.config import Config, PushPostConfig
from bot.events import Reply
from bot.push_spec import (
    SpecError,
    build_trigger,
    fire_after,
    fire_times,
    parse_group_ref,
    parse_quiet_hours,
    parse_schedule,
    quiet_until,
    render_content,
    uses,
)
from bot.templates import Templates
from storage import push as store
from storage.checkin import CheckinDayCount
from storage.db import Database, utcnow
from storage.groups import Group, ensure_group, member_count

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger("qunbot.push")

JOB_PREFIX = "push:"
SYNC_JOB = "push-sync"
OUTBOX_JOB = "push-outbox"
# Firings recorded per transaction, and per pass over one post (a long downtime takes several passes).
RUNS_PER_TRANSACTION = 100
RUNS_PER_PASS = 1000
# Workers write a heartbeat this often; a door counts as served while a heartbeat is this recent.
HEARTBEAT_SECONDS = 5.0
ALIVE_SECONDS = 30.0
# A rate-limited door's retry never waits less than this.
MIN_RETRY_AFTER = 1.0

_SERVICES: weakref.WeakKeyDictionary[Runtime, PushService] = weakref.WeakKeyDictionary()


def service(runtime: Runtime) -> PushService | None:
    """The runtime's push service (None where `push.enabled` is off or before start-up)."""
    return _SERVICES.get(runtime)


async def start_push(runtime: Runtime) -> None:
    """Start-up hook: config posts upserted, timers built, missed firings caught up, the outbox started."""
    await apply_config_posts(runtime.db, runtime.config)
    if not runtime.config.push.enabled:
        log.info("scheduled posts are off in this process (push.enabled = false)")
        return
    push = PushService(runtime)
    _SERVICES[runtime] = push
    await push.start()


# -- config posts ----------------------------------------------------------------------------------------


async def apply_config_posts(db: Database, config: Config, now: datetime | None = None) -> dict[str, str]:
    """Upsert the posts declared in [[push.posts]] by name (source "config"); posts that were declared before
    and are gone from the file are removed (their history stays). What happened to each name. The file's
    [[campaigns]] come first (scheduler.campaign.apply_config_campaigns): its posts may belong to them."""
    from scheduler.campaign import apply_config_campaigns, settings_of
    from storage import campaign as campaigns

    now = now or utcnow()
    await apply_config_campaigns(db, config, now)
    outcome: dict[str, str] = {}
    async with db.session() as session:
        for declared in config.push.posts:
            fields = await config_post_fields(session, config, declared, now)
            post, what = await store.upsert_config_post(session, fields, now)
            if (post.campaign_id, post.phase) != (fields.campaign_id, fields.phase):
                if fields.campaign_id is None:
                    post, _ = await campaigns.detach_post(session, post.id, now=now, settings=settings_of(config))  # type: ignore[arg-type]
                else:
                    post, _ = await campaigns.attach_post(session, fields.campaign_id, post.id, fields.phase, now=now)  # type: ignore[arg-type]
                what = "updated"
            outcome[declared.name] = what
            if what != "unchanged":
                log.info("config post %s", what, extra={"post": post.id, "post_name": declared.name})
            if fields.schedule.run_at is not None and fields.schedule.run_at <= post.covered_until:
                log.warning("config post's one-time schedule is in the past: it will not be sent",
                            extra={"post": post.id, "post_name": declared.name})
        for name in await store.remove_config_posts_except(session, {p.name for p in config.push.posts}, now):
            outcome[name] = "removed"
            log.info("config post removed (no longer in the config file)", extra={"post_name": name})
    return outcome


async def config_post_fields(session: Any, config: Config, declared: PushPostConfig, now: datetime) -> store.PostFields:
    plan = await _config_post_campaign(session, config, declared) if declared.campaign else None
    tz = declared.timezone or (plan.campaign.timezone if plan is not None else config.timezone)
    schedule = parse_schedule(declared.schedule, tz=tz, now=now, allow_past=True)
    default_channel = declared.channel or "simulator"
    group_ids: list[int] = []
    for ref in declared.groups:
        channel, external = parse_group_ref(ref, default_channel)
        group_ids.append((await ensure_group(session, channel, external)).id)  # type: ignore[arg-type]
    kind = store.GROUPS if declared.groups else store.TAG if declared.tag else store.ALL
    targets: dict[str, Any] = {"target_kind": kind, "target_tag": declared.tag or None, "group_ids": tuple(group_ids),
                               "target_channel": (declared.channel or None) if kind != store.GROUPS else None}
    if plan is not None and not (declared.groups or declared.tag or declared.all):
        from storage.campaign import post_targets

        targets = await post_targets(session, plan.campaign)
    return store.PostFields(schedule=schedule, schedule_text=declared.schedule, timezone=tz, content=declared.content,
                            kind=declared.kind, payload=declared.payload, name=declared.name, enabled=declared.enabled,
                            campaign_id=plan.id if plan is not None else None, phase=declared.phase or None, **targets)


async def _config_post_campaign(session: Any, config: Config, declared: PushPostConfig) -> Any:
    """The live campaign a config post names (storage.campaign.Plan), its phase and dates checked; a mistake
    stops the start-up naming the post, as any invalid configuration does."""
    from bot.config import ConfigError
    from storage import campaign as campaigns

    where = f"invalid configuration: push.posts ({declared.name!r}.campaign)"
    found = await campaigns.get_campaign(session, declared.campaign)
    if found is None:
        raise ConfigError(f"{where}: no live campaign {declared.campaign!r} ([[campaigns]] or qunbot campaign add)")
    plan = await campaigns.load_plan(session, found)
    try:
        campaigns.check_phase(plan, declared.phase or None)
        from bot.push_spec import check_content

        check_content(declared.content, {**config.push.dates, **plan.named_dates()}, campaign=True)
    except (campaigns.CampaignError, SpecError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return plan


# -- rendering -------------------------------------------------------------------------------------------


def group_timezone(config: Config, group: Group) -> str:
    return group.timezone or config.timezone


def local_date_text(templates: Templates, day: date) -> str:
    return templates.render("push.date", year=day.year, month=day.month, day=day.day)


def weekday_text(templates: Templates, day: date) -> str:
    names = [n.strip() for n in templates.raw("push.weekdays").split(",")]
    return names[day.weekday()] if len(names) == 7 else day.strftime("%A")


async def render_post(db: Database, config: Config, templates: Templates, *, kind: str, content: str,
                      payload: dict[str, Any], scheduled_at: datetime, group: Group,
                      campaign_id: int | None = None, phase: str | None = None) -> Reply:
    """What a firing posts into one group: the content with its variables filled in for that group, on the
    run's local day in the group's timezone (a campaign's countdowns: in the campaign's, scheduler.campaign)."""
    tz = group_timezone(config, group)
    today = scheduled_at.astimezone(ZoneInfo(tz)).date()
    values: dict[str, object] = {"date": local_date_text(templates, today), "weekday": weekday_text(templates, today),
                                 "group_name": group.name or group.external_id}
    if uses(content, "member_count") or uses(content, "yesterday_checkins"):
        async with db.read_session() as session:
            if uses(content, "member_count"):
                values["member_count"] = await member_count(session, group)
            if uses(content, "yesterday_checkins"):
                found = await session.execute(select(CheckinDayCount.checkins).where(
                    CheckinDayCount.group_id == group.id, CheckinDayCount.day == today - timedelta(days=1)))
                values["yesterday_checkins"] = found.scalar_one_or_none() or 0
    if campaign_id is not None:
        from scheduler.campaign import countdown_values

        values.update(await countdown_values(db, templates, campaign_id, phase, scheduled_at))
    text = render_content(content, values, today, config.push.dates)
    if kind == "markdown":
        return Reply(text, markdown=True)
    if kind in ("image", "news"):
        return Reply(text, attachment={"kind": kind, **payload})
    return Reply(text)


def door_blocks(kind: str) -> store.Blocked:
    """Doors that cannot take this kind of post at all (declared capabilities): their deliveries are recorded
    as skipped with the reason when a run fires, instead of waiting for a process with the door."""
    from bot.channels import DOORS, door_class

    reasons: dict[str, str] = {}
    for name in DOORS:
        try:
            caps = door_class(name).capabilities
        except Exception:  # noqa: S112 - a door this install cannot import: a process that has it decides
            continue
        if not caps.can_post_proactively and not caps.confirmed_posts:
            reasons[name] = f"the {name} door cannot post on its own"
        elif kind == "image" and not caps.images:
            reasons[name] = f"the {name} door cannot post images"
        elif kind == "news" and not caps.news:
            reasons[name] = f"the {name} door cannot post news cards"
    return store.Blocked(reasons)


# -- the service -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    id: int
    post_id: int
    scheduled_at: datetime
    late: bool
    kind: str
    content: str
    payload: dict[str, Any]
    campaign_id: int | None = None
    phase: str | None = None


class PushService:
    """One per process: the post timers, firing, and the outbox worker."""

    def __init__(self, runtime: Runtime, clock: Callable[[], datetime] = utcnow) -> None:
        self.runtime = runtime
        self.config = runtime.config.push
        self.holder = runtime.new_holder()
        # Tests drive time through this (and the `now` arguments).
        self.clock = clock
        # Post id → the revision its APScheduler job was built from.
        self.timers: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._last_beat: datetime | None = None
        self._runs: dict[int, RunInfo] = {}

    @property
    def db(self) -> Database:
        return self.runtime.db

    @property
    def channels(self) -> list[str]:
        """The doors this process sends through."""
        return sorted(self.runtime.channels)

    async def start(self) -> None:
        scheduler = self.runtime.scheduler
        scheduler.add_listener(self._on_scheduler_shutdown, EVENT_SCHEDULER_SHUTDOWN)
        await self._heartbeat(self.clock(), force=True)
        await self.sync()
        scheduler.add_job(self.sync, "interval", seconds=self.config.sync_interval_seconds, id=SYNC_JOB,
                          replace_existing=True, max_instances=1, coalesce=True, misfire_grace_time=None)
        scheduler.add_job(self._outbox_loop, id=OUTBOX_JOB, replace_existing=True, max_instances=1,
                          misfire_grace_time=None, next_run_time=self.clock())
        log.info("scheduled posts started", extra={"holder": self.holder, "posts": len(self.timers),
                                                   "channels": ",".join(self.channels)})

    def _on_scheduler_shutdown(self, _event: object) -> None:
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        """Deliveries were queued: let the outbox look now rather than at its next poll."""
        self._wake.set()

    # -- timers --------------------------------------------------------------------------------------

    async def sync(self, now: datetime | None = None) -> None:
        """Rebuild the timers of changed posts, drop those of paused or removed ones, record any firing that
        is due (the catch-up after downtime, and a safety net for a timer that woke early), and skip
        deliveries no running process can send."""
        now = now or self.clock()
        posts = await store.live_posts(self.db)
        live = {post.id: post for post in posts}
        for post in posts:
            if self.timers.get(post.id) != post.revision:  # type: ignore[arg-type]
                self._set_timer(post, now)
        for post_id in [p for p in self.timers if p not in live]:
            self._drop_timer(post_id)
        queued = 0
        for post in posts:
            try:
                queued += len(await self.materialize(post, now))
            except Exception:
                log.exception("recording the post's firings failed", extra={"post": post.id})
        if queued:
            self.wake()
        await self._heartbeat(now, force=True)
        skipped = await store.skip_unserved(self.db, now=now, alive_since=now - timedelta(seconds=ALIVE_SECONDS),
                                            waited=self.config.unserved_timeout_seconds)
        if skipped:
            log.warning("deliveries skipped: no running process has their door", extra={"count": skipped})

    async def refresh(self, post_id: int) -> None:
        """A post changed in this process: rebuild (or drop) its timer now instead of at the next sync."""
        async with self.db.read_session() as session:
            post = await store.get_post(session, post_id)
        if post is None or not post.enabled:
            self._drop_timer(post_id)
        else:
            self._set_timer(post, self.clock())

    def _set_timer(self, post: store.PushPost, now: datetime) -> None:
        assert post.id is not None
        self.timers[post.id] = post.revision
        job_id = f"{JOB_PREFIX}{post.id}"
        if fire_after(post.schedule, post.timezone, post.anchor_at, max(now, post.covered_until)) is None:
            # A one-time post that has fired: nothing to time.
            if self.runtime.scheduler.get_job(job_id):
                self.runtime.scheduler.remove_job(job_id)
            return
        trigger = build_trigger(post.schedule, post.timezone, post.anchor_at)
        self.runtime.scheduler.add_job(self.fire, trigger, args=[post.id], id=job_id, replace_existing=True,
                                       max_instances=1, coalesce=True, misfire_grace_time=None)

    def _drop_timer(self, post_id: int) -> None:
        self.timers.pop(post_id, None)
        job_id = f"{JOB_PREFIX}{post_id}"
        if self.runtime.scheduler.get_job(job_id):
            self.runtime.scheduler.remove_job(job_id)

    def next_fire_time(self, post_id: int) -> datetime | None:
        """When APScheduler will next wake this process for the post (None: no timer)."""
        job = self.runtime.scheduler.get_job(f"{JOB_PREFIX}{post_id}")
        return job.next_run_time if job is not None else None

    async def fire(self, post_id: int, now: datetime | None = None) -> list[int]:
        """A post's timer went off: record its due firings (see `materialize`) and wake the outbox."""
        now = now or self.clock()
        async with self.db.read_session() as session:
            post = await store.get_post(session, post_id)
        if post is None or not post.enabled:
            return []
        created = await self.materialize(post, now)
        if created:
            self.wake()
        return created

    async def materialize(self, post: store.PushPost, now: datetime) -> list[int]:
        """Record every firing of the post in (covered_until, now] that nobody recorded yet: on time, late
        (within the grace period) or skipped as missed. The new runs' ids."""
        cfg = self.config
        assert post.id is not None
        created: list[int] = []
        cursor = post.covered_until
        blocked = door_blocks(post.kind)
        while True:
            times = list(fire_times(post.schedule, post.timezone, post.anchor_at, cursor, now, limit=RUNS_PER_PASS))
            if not times:  # nothing due (the usual case at a sync): no write
                return created
            sendable = [t for t in times if (now - t).total_seconds() <= cfg.grace_seconds]
            late = [t for t in sendable if (now - t).total_seconds() > cfg.late_after_seconds]
            superseded = set(late[:-1]) if cfg.coalesce_missed else set()
            for start in range(0, len(times), RUNS_PER_TRANSACTION):
                async with self.db.session() as session:
                    for at in times[start:start + RUNS_PER_TRANSACTION]:
                        skipped = ("missed" if at not in sendable else
                                   "superseded by a later missed run" if at in superseded else None)
                        run_id = await store.record_run(session, post, at, now=now, late=at in late, skipped=skipped,
                                                        blocked=blocked, instance=self.holder)
                        if run_id is not None:
                            created.append(run_id)
                            log.info("post fired", extra={"post": post.id, "run": run_id,
                                                          "scheduled_at": at.isoformat(),
                                                          "state": skipped or ("late" if at in late else "on time")})
            cursor = times[-1]
            if len(times) < RUNS_PER_PASS:
                await store.advance_coverage(self.db, post.id, now)
                return created
            await store.advance_coverage(self.db, post.id, cursor)

    # -- the outbox ----------------------------------------------------------------------------------

    async def _outbox_loop(self) -> None:
        poll = self.config.poll_interval_seconds
        while not self._stopping:
            self._wake.clear()
            handled = 0
            try:
                await self._heartbeat(self.clock())
                handled = await self.deliver_due()
            except Exception:
                log.exception("push outbox pass failed")
            if handled or self._stopping:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=poll)
            except TimeoutError:
                pass
        try:
            await store.leave(self.db, self.holder)
        except Exception:
            log.exception("push worker could not sign off")

    async def _heartbeat(self, now: datetime, *, force: bool = False) -> None:
        if not force and self._last_beat is not None and (now - self._last_beat).total_seconds() < HEARTBEAT_SECONDS:
            return
        await store.heartbeat(self.db, self.holder, self.channels, now)
        self._last_beat = now

    async def deliver_due(self, now: datetime | None = None) -> int:
        """Send the deliveries due now on this process's doors, `push.concurrency` at a time, until none is
        due; how many were taken. `now` pins the clock (tests); otherwise each claim reads it."""
        limit = self.config.concurrency
        channels = self.channels
        if not await store.anything_due(self.db, channels, now or self.clock()):
            return 0
        in_flight: set[asyncio.Task[None]] = set()
        handled = 0
        try:
            while True:
                free = limit - len(in_flight)
                claimed: list[store.Claimed] = []
                if not self._stopping and free > 0 and (not in_flight or free >= max(1, limit // 2)):
                    claimed = await store.claim(self.db, channels=channels, holder=self.holder,
                                                now=now or self.clock(), lease_seconds=self.config.lease_seconds,
                                                limit=free)
                for one in claimed:
                    in_flight.add(asyncio.create_task(self._deliver(one, now), name=f"push-delivery-{one.id}"))
                handled += len(claimed)
                if not in_flight:
                    return handled
                if claimed and len(in_flight) < limit:
                    continue  # more may be due: claim again before waiting
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        log.error("push delivery crashed", exc_info=task.exception())
        finally:
            # Cancelled (shutdown past its grace): the sends still running stop too; their leases run out and
            # another process (or the next start) takes them.
            for task in in_flight:
                task.cancel()

    async def _run_info(self, run_id: int) -> RunInfo:
        info = self._runs.get(run_id)
        if info is None:
            async with self.db.read_session() as session:
                run = await session.get(store.PushRun, run_id)
                assert run is not None
                post = await session.get(store.PushPost, run.post_id)
            import json

            info = RunInfo(run.id, run.post_id, run.scheduled_at, run.late, run.kind, run.content,  # type: ignore[arg-type]
                           json.loads(run.payload or "{}"), post.campaign_id if post else None,
                           post.phase if post else None)
            if len(self._runs) > 1000:
                self._runs.clear()
            self._runs[run_id] = info
        return info

    async def _deliver(self, claimed: store.Claimed, pinned: datetime | None) -> None:
        now = pinned or self.clock()
        fields = {"delivery": claimed.id, "run": claimed.run_id, "channel": claimed.channel,
                  "attempt": claimed.attempts}
        try:
            await self._attempt(claimed, now, fields)
        except asyncio.CancelledError:
            raise  # shutting down: the lease runs out and the delivery is taken again
        except Exception as exc:
            log.exception("push delivery failed unexpectedly", extra=fields)
            await self._transient(claimed, now, f"{type(exc).__name__}: {exc}", fields)

    async def _attempt(self, claimed: store.Claimed, now: datetime, fields: dict[str, Any]) -> None:
        cfg = self.config
        run = await self._run_info(claimed.run_id)
        fields["post"] = run.post_id
        group, settings = await store.delivery_group(self.db, claimed.group_id)
        if group is None or group.dismissed_at is not None:
            await self._finish(claimed, store.SKIPPED, "group dismissed", now, fields)
            return
        fields["group"] = group.external_id
        door = self.runtime.channels.get(claimed.channel)
        if door is None:  # this process claims only its own doors; the door went away: leave it for others
            await store.retry_later(self.db, claimed.id, self.holder, now=now, counts=False, reason="",
                                    at=now + timedelta(seconds=self.config.poll_interval_seconds))
            return
        caps = door.capabilities
        # Straight into the group, or (doors whose posts a person confirms) queued for that person.
        direct = door.posts_directly(group.external_id)
        if not direct and not caps.confirmed_posts:
            await self._finish(claimed, store.SKIPPED, f"the {claimed.channel} door cannot post on its own", now, fields)
            return
        if (run.kind == "image" and not caps.images) or (run.kind == "news" and not caps.news):
            await self._finish(claimed, store.SKIPPED, f"the {claimed.channel} door cannot post {run.kind}", now, fields)
            return
        tz = group_timezone(self.runtime.config, group)
        window_text = cfg.quiet_hours if settings is None or settings.quiet_hours is None else settings.quiet_hours
        window = parse_quiet_hours(window_text)
        until = quiet_until(now, window, tz)
        if until is not None:
            local_end = until.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
            await store.retry_later(self.db, claimed.id, self.holder, at=until, now=now, counts=False,
                                    reason=f"quiet hours {window_text} ({tz}): deferred to {local_end}")
            log.info("push delivery deferred: quiet hours", extra={**fields, "until": until.isoformat()})
            return
        cap = cfg.daily_cap if settings is None or settings.daily_cap is None else settings.daily_cap
        if claimed.counted_day is None:
            day = now.astimezone(ZoneInfo(tz)).date()
            if not await store.take_day_slot(self.db, claimed.id, self.holder, group.id, day, cap):  # type: ignore[arg-type]
                await self._finish(claimed, store.SKIPPED, f"daily cap reached: {cap} posts on {day} ({tz})", now,
                                   fields)
                return
        reply = await render_post(self.db, self.runtime.config, self.runtime.templates, kind=run.kind,
                                  content=run.content, payload=run.payload, scheduled_at=run.scheduled_at, group=group,
                                  campaign_id=run.campaign_id, phase=run.phase)
        note = ""
        try:
            if direct:
                await asyncio.wait_for(door.post(group.external_id, [reply]), timeout=cfg.send_timeout_seconds)
            else:
                queued = QueuedPost(delivery_id=claimed.id, run_id=claimed.run_id, group_id=claimed.group_id,
                                    group=group.external_id, holder=self.holder, now=now)
                note = await asyncio.wait_for(door.queue_post(queued, [reply]), timeout=cfg.send_timeout_seconds)
        except PostSkipped as exc:
            await self._finish(claimed, store.SKIPPED, exc.reason, now, fields, give_back=True)
            return
        except PostFailed as exc:
            if exc.permanent:
                await self._finish(claimed, store.FAILED, exc.reason, now, fields, give_back=True)
            elif exc.retry_after is not None:
                wait = max(exc.retry_after, MIN_RETRY_AFTER)
                await store.retry_later(self.db, claimed.id, self.holder, at=now + timedelta(seconds=wait), now=now,
                                        counts=False, reason=f"rate limited, retry in {wait:g} s: {exc.reason}")
                log.info("push delivery throttled", extra={**fields, "retry_after": wait})
            else:
                await self._transient(claimed, now, exc.reason, fields)
            return
        except NotImplementedError:
            await self._finish(claimed, store.SKIPPED, f"the {claimed.channel} door cannot post on its own", now,
                               fields, give_back=True)
            return
        except TimeoutError:
            await self._transient(claimed, now, f"no answer within {cfg.send_timeout_seconds:g} s", fields)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._transient(claimed, now, f"{type(exc).__name__}: {exc}", fields)
            return
        if not direct:  # the door records its outcome once the person has acted (or not)
            await self._finish(claimed, store.AWAITING, note, now, fields)
            return
        await self._finish(claimed, store.SENT, None, now, fields)

    async def _finish(self, claimed: store.Claimed, status: str, reason: str | None, now: datetime,
                      fields: dict[str, Any], *, give_back: bool = False) -> None:
        kept = await store.finish(self.db, claimed.id, self.holder, status=status, reason=reason, now=now,
                                  release_day=give_back)
        level = logging.INFO if status in (store.SENT, store.AWAITING) else logging.WARNING
        log.log(level, "push delivery %s", status, extra={**fields, "reason": reason or ""})
        if not kept:
            log.warning("push delivery outcome not recorded: its lease was taken over", extra=fields)

    async def _transient(self, claimed: store.Claimed, now: datetime, reason: str, fields: dict[str, Any]) -> None:
        cfg = self.config
        if claimed.attempts >= cfg.max_attempts:
            await self._finish(claimed, store.FAILED, f"gave up after {claimed.attempts} attempts: {reason}", now,
                               fields, give_back=True)
            return
        backoff = min(cfg.retry_base_seconds * 2 ** (claimed.attempts - 1), cfg.retry_max_seconds)
        at = now + timedelta(seconds=backoff)
        await store.retry_later(self.db, claimed.id, self.holder, at=at, now=now,
                                reason=f"attempt {claimed.attempts} failed: {reason}; retry at {at:%H:%M:%S} UTC")
        log.warning("push delivery will be retried", extra={**fields, "reason": reason, "retry_in": backoff})


# -- previews --------------------------------------------------------------------------------------------


def next_runs(post: store.PushPost, count: int, now: datetime,
              window: tuple[datetime, datetime] | None = None) -> list[datetime]:
    """The post's next `count` firings after now (or after what it already covered); with `window` [start,
    end), only those within it (a campaign post's phase: storage.campaign.Plan.window)."""
    after = max(now, post.covered_until)
    if window is None:
        return list(fire_times(post.schedule, post.timezone, post.anchor_at, after, limit=count))
    after = max(after, window[0] - timedelta(microseconds=1))
    return [t for t in fire_times(post.schedule, post.timezone, post.anchor_at, after, limit=count) if t < window[1]]

