"""Campaigns at run time: milestone reminders to ops, and the countdown variables of campaign posts.

Reminders: every process runs an APScheduler interval job (`campaign.reminder_interval_seconds`). Each run
1. records the milestones that are due — each phase's first day and N days before the key date
   (`campaign.reminder_days_before`, or the campaign's own), at `campaign.reminder_time` in the campaign's
   timezone — as rows unique per (campaign, milestone): whichever process comes first records it, the
   others find it there. Milestones on days before the campaign was created are not reminded; one found
   more than `campaign.reminder_grace_seconds` late (downtime) is recorded as skipped ("missed");
2. claims due reminder rows on the doors this process has (a conditional UPDATE with a lease) and posts
   each through its door target: a group (`robot:ops`) with the ops users @-mentioned, or a door's 1:1
   scope (`wecom:@direct`: the WeCom app's message/send to each ops user). Transient failures are retried
   with doubling backoff up to `campaign.reminder_max_attempts`; permanent ones are recorded as failed at
   once, with the reason. A holder that dies mid-send is replaced when its lease runs out (the reminder may
   then go out twice: at least once, never silently lost);
3. records reminders still unsent `campaign.reminder_grace_seconds` after their time as failed (their door
   is in no running process).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from bot.channels.base import PostFailed
from bot.config import Config, ConfigError
from bot.events import Reply
from bot.templates import Templates
from storage import campaign as store
from storage.db import Database, utcnow

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger("qunbot.campaign")

JOB_ID = "campaign-reminders"
SEND_TIMEOUT_SECONDS = 30.0
RETRY_MAX_SECONDS = 3600.0


async def start_campaign_reminders(runtime: Runtime) -> None:
    """Start-up hook: the reminder job on the runtime's scheduler (its first run is now)."""
    cfg = runtime.config.campaign
    if not cfg.enabled:
        log.info("campaign reminders are off in this process (campaign.enabled = false)")
        return
    holder = runtime.new_holder()
    runtime.scheduler.add_job(run_reminders, "interval", seconds=cfg.reminder_interval_seconds,
                              args=[runtime, holder], id=JOB_ID, replace_existing=True, max_instances=1,
                              coalesce=True, next_run_time=datetime.now(UTC))


async def run_reminders(runtime: Runtime, holder: str, now: datetime | None = None) -> int:
    """One pass: record due milestones, send the reminders due on this process's doors, fail the stale
    ones. How many reminders were sent."""
    now = now or utcnow()
    try:
        await record_due(runtime, now)
    except Exception:
        log.exception("recording campaign milestones failed")
    sent = await send_due(runtime, holder, now)
    stale = await store.fail_stale_reminders(runtime.db, now=now,
                                             grace_seconds=runtime.config.campaign.reminder_grace_seconds)
    if stale:
        log.warning("campaign reminders never sent: recorded as failed", extra={"count": stale})
    return sent


def reminder_clock(runtime: Runtime) -> time:
    return time.fromisoformat(runtime.config.campaign.reminder_time)


def settings_of(config: Config) -> store.CampaignSettings:
    """What campaign edits need from the configuration (reminder timing and target, push.dates)."""
    cfg = config.campaign
    return store.CampaignSettings(reminder_time=time.fromisoformat(cfg.reminder_time),
                                  reminder_days_before=tuple(cfg.reminder_days_before),
                                  reminder_target=cfg.reminder_target, push_dates=dict(config.push.dates))


# -- campaigns declared in the config file ---------------------------------------------------------------


async def apply_config_campaigns(db: Database, config: Config, now: datetime | None = None) -> dict[str, str]:
    """Upsert the [[campaigns]] of the config file by name (storage.campaign.upsert_config_campaign); those
    the file declared before and no longer does are removed with their posts. Runs at start-up, before the
    config's posts (which may belong to them). What happened to each name; changes are audited (source
    "config"). Two processes starting at once: the second finds the first's rows."""
    from sqlalchemy.exc import IntegrityError

    now = now or utcnow()
    for attempt in range(2):
        try:
            return await _apply_config_campaigns(db, config, now)
        except IntegrityError:
            if attempt:
                raise
    return {}


async def _apply_config_campaigns(db: Database, config: Config, now: datetime) -> dict[str, str]:
    from storage import audit as audit_store
    from storage.groups import ensure_group

    settings = settings_of(config)
    outcome: dict[str, str] = {}
    async with db.session() as session:
        for n, declared in enumerate(config.campaigns):
            group_ids: list[int] = []
            for ref in declared.groups:
                from bot.push_spec import parse_group_ref

                channel, external = parse_group_ref(ref, declared.channel or "simulator")
                group_ids.append((await ensure_group(session, channel, external)).id)  # type: ignore[arg-type]
            try:
                fields = declared.fields(config.timezone, tuple(group_ids))
                edit, what = await store.upsert_config_campaign(session, fields, now=now, settings=settings)
            except store.CampaignError as exc:
                raise ConfigError(f"invalid configuration: campaigns.{n} (config): campaign {declared.name!r}: "
                                  f"{exc}") from None
            outcome[fields.name] = what
            if what != "unchanged":
                detail = (f"campaign {edit.campaign.id} {edit.campaign.name} created from the config file"
                          if what == "created" else edit.detail)
                log.info("config campaign %s", what, extra={"campaign": edit.campaign.id, "campaign_name": fields.name})
                await audit_store.record(session, source="config", actor="config file", command=f"campaign {what}",
                                         args=fields.name, result=audit_store.OK, detail=detail, at=now)
        names = {c.name.strip() for c in config.campaigns}
        for campaign, posts in await store.remove_config_campaigns_except(session, names, now):
            outcome[campaign.name] = "removed"
            log.info("config campaign removed (no longer in the config file)", extra={"campaign": campaign.id})
            await audit_store.record(session, source="config", actor="config file", command="campaign remove",
                                     args=campaign.name, result=audit_store.OK, at=now,
                                     detail=f"campaign {campaign.id} {campaign.name} removed (no longer in the config "
                                            "file)" + (f" with its post(s) {', '.join(map(str, posts))}" if posts else ""))
    return outcome


async def record_due(runtime: Runtime, now: datetime) -> list[int]:
    """Record every live campaign's milestones that are due and not recorded yet; the new rows' ids."""
    cfg = runtime.config.campaign
    async with runtime.db.read_session() as session:
        plans = [await store.load_plan(session, c) for c in await store.list_campaigns(session)]
        known = {plan.id: await store.known_milestones(session, plan.id) for plan in plans}
    made: list[int] = []
    for plan in plans:
        first_day = plan.local_day(plan.campaign.created_at)
        days = store.reminder_days(plan.campaign, tuple(cfg.reminder_days_before))
        due = [m for m in store.milestones(plan, at=reminder_clock(runtime), days_before=days)
               if m.due_at <= now and m.key not in known[plan.id] and plan.local_day(m.due_at) >= first_day]
        if not due:
            continue
        route = store.reminder_route(plan.campaign, cfg.reminder_target)
        async with runtime.db.session() as session:
            ids = await store.record_reminders(session, plan, due, route=route, now=now,
                                               grace_seconds=cfg.reminder_grace_seconds)
        for milestone in due:
            log.info("campaign milestone due", extra={"campaign": plan.id, "milestone": milestone.key,
                                                      "channel": route.channel, "problem": route.problem})
        made += ids
    return made


async def send_due(runtime: Runtime, holder: str, now: datetime) -> int:
    """Send the reminders due on this process's doors; how many went out."""
    cfg = runtime.config.campaign
    sent = 0
    while True:
        claimed = await store.claim_reminders(runtime.db, channels=sorted(runtime.channels), holder=holder, now=now,
                                              lease_seconds=cfg.reminder_lease_seconds)
        if not claimed:
            return sent
        for reminder in claimed:
            try:
                sent += await _send(runtime, holder, reminder, now)
            except Exception:  # its lease runs out and the next pass (here or elsewhere) tries again
                log.exception("campaign reminder crashed", extra={"reminder": reminder.id})


async def _send(runtime: Runtime, holder: str, reminder: store.ClaimedReminder, now: datetime) -> int:
    cfg = runtime.config.campaign
    db = runtime.db
    fields = {"reminder": reminder.id, "campaign": reminder.campaign_id, "milestone": reminder.milestone,
              "channel": reminder.channel, "attempt": reminder.attempts}
    async with db.read_session() as session:
        plan = await store.plan_of(session, reminder.campaign_id)
    if plan is None or plan.campaign.removed_at is not None:
        await store.finish_reminder(db, reminder.id, holder, status=store.SKIPPED, reason="campaign removed", now=now)
        return 0
    text = reminder_text(runtime.templates, plan, reminder.milestone, reminder.due_at, clock=reminder_clock(runtime))
    reply = Reply(text, mentions=plan.campaign.ops)
    door = runtime.channels[reminder.channel]
    try:
        await asyncio.wait_for(door.post(reminder.target, [reply]), timeout=SEND_TIMEOUT_SECONDS)
    except PostFailed as exc:
        if exc.permanent:
            await _fail(db, holder, reminder, exc.reason, now, fields)
        elif exc.retry_after is not None:
            wait = max(exc.retry_after, 1.0)
            await store.retry_reminder(db, reminder.id, holder, at=now + timedelta(seconds=wait), now=now,
                                       counts=False, reason=f"rate limited, retry in {wait:g} s: {exc.reason}")
        else:
            await _transient(db, holder, reminder, exc.reason, now, fields, cfg.reminder_max_attempts,
                             cfg.reminder_retry_seconds)
        return 0
    except NotImplementedError as exc:
        await _fail(db, holder, reminder, str(exc) or f"the {reminder.channel} door cannot post there", now, fields)
        return 0
    except TimeoutError:
        await _transient(db, holder, reminder, f"no answer within {SEND_TIMEOUT_SECONDS:g} s", now, fields,
                         cfg.reminder_max_attempts, cfg.reminder_retry_seconds)
        return 0
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await _transient(db, holder, reminder, f"{type(exc).__name__}: {exc}", now, fields,
                         cfg.reminder_max_attempts, cfg.reminder_retry_seconds)
        return 0
    if not await store.finish_reminder(db, reminder.id, holder, status=store.SENT, reason=None, now=now):
        log.warning("campaign reminder sent but its lease was taken over", extra=fields)
    log.info("campaign reminder sent", extra=fields)
    return 1


async def _fail(db: Database, holder: str, reminder: store.ClaimedReminder, reason: str, now: datetime,
                fields: dict[str, Any]) -> None:
    await store.finish_reminder(db, reminder.id, holder, status=store.FAILED, reason=reason, now=now)
    log.warning("campaign reminder failed", extra={**fields, "reason": reason})


async def _transient(db: Database, holder: str, reminder: store.ClaimedReminder, reason: str, now: datetime,
                     fields: dict[str, Any], max_attempts: int, base: float) -> None:
    if reminder.attempts >= max_attempts:
        await _fail(db, holder, reminder, f"gave up after {reminder.attempts} attempts: {reason}", now, fields)
        return
    wait = min(base * 2 ** (reminder.attempts - 1), RETRY_MAX_SECONDS)
    at = now + timedelta(seconds=wait)
    await store.retry_reminder(db, reminder.id, holder, at=at, now=now,
                               reason=f"attempt {reminder.attempts} failed: {reason}; retry at {at:%H:%M:%S} UTC")
    log.warning("campaign reminder will be retried", extra={**fields, "reason": reason, "retry_in": wait})


# -- texts -----------------------------------------------------------------------------------------------


def day_text(templates: Templates, day: date) -> str:
    return templates.render("campaign.day", year=day.year, month=day.month, day=day.day)


def countdown_text(templates: Templates, plan: store.Plan, day: date) -> str:
    """"距开售（11月11日）还有 3 天" / "今天就是开售" / "开售已过去 2 天", on `day` (campaign timezone)."""
    left = plan.days_left(day)
    key = "campaign.countdown" if left > 0 else "campaign.countdown_today" if left == 0 else "campaign.countdown_past"
    return templates.render(key, key_name=plan.campaign.key_name, key_date=day_text(templates, plan.campaign.key_date),
                            days=abs(left))


def span_text(templates: Templates, first: date, last: date) -> str:
    if first == last:
        return day_text(templates, first)
    return templates.render("campaign.span", first=day_text(templates, first), last=day_text(templates, last))


def phase_now_text(templates: Templates, plan: store.Plan, day: date) -> str:
    """The phase on `day`, or before / between / after the campaign's phases."""
    phase = plan.phase_on(day)
    if phase is not None:
        first, last = plan.phases[phase]
        return templates.render("campaign.phase_now", phase=store.phase_label(phase), span=span_text(templates, first, last))
    state = plan.state_on(day)
    if state == "before":
        return templates.render("campaign.phase_before", first=day_text(templates, plan.span()[0]))
    return templates.raw("campaign.phase_after" if state == "after" else "campaign.phase_gap")


def phases_text(templates: Templates, plan: store.Plan) -> str:
    return templates.raw("campaign.phase_separator").join(
        templates.render("campaign.phase_item", phase=store.phase_label(p), span=span_text(templates, s, e))
        for p, (s, e) in plan.phases.items())


def reminder_text(templates: Templates, plan: store.Plan, milestone: str, due_at: datetime, *, clock: time) -> str:
    """What ops hear at a milestone (on the milestone's day, in the campaign's timezone)."""
    day = plan.local_day(due_at)
    campaign = plan.campaign
    common = {"title": campaign.title, "name": campaign.name, "countdown": countdown_text(templates, plan, day),
              "owner": campaign.owner or templates.raw("campaign.no_owner"), "phases": phases_text(templates, plan),
              "phase_now": phase_now_text(templates, plan, day)}
    kind, _, arg = milestone.partition(":")
    if kind == "phase" and arg in plan.phases:
        first, last = plan.phases[arg]
        return templates.render("campaign.reminder_phase", phase=store.phase_label(arg),
                                span=span_text(templates, first, last), **common)
    return templates.render("campaign.reminder_before", **common)


# A definition being edited (the console's live preview): its posts render with it instead of the stored one.
_PREVIEWING: ContextVar[store.Plan | None] = ContextVar("campaign_previewing", default=None)


@contextmanager
def previewing(plan: store.Plan) -> Iterator[None]:
    """Within this block (this task only), posts of `plan`'s campaign render with `plan` — a definition not
    saved yet, e.g. a phase date being typed — instead of what is stored. A new campaign has id 0."""
    token = _PREVIEWING.set(plan)
    try:
        yield
    finally:
        _PREVIEWING.reset(token)


async def countdown_values(db: Database, templates: Templates, campaign_id: int, phase: str | None,
                           scheduled_at: datetime) -> dict[str, object]:
    """A campaign post's variables for a firing: {campaign} (its title), {phase} (the post's phase, else the
    one on that day), {days_left} (to the key date) and {days_until:NAME} for the campaign's dates — all
    counted on the firing's day in the campaign's timezone, so every group of one run reads the same."""
    plan = _PREVIEWING.get()
    if plan is None or (plan.campaign.id or 0) != campaign_id:
        async with db.read_session() as session:
            plan = await store.plan_of(session, campaign_id)
    if plan is None:
        return {}
    return plan_values(templates, plan, phase, scheduled_at)


def plan_values(templates: Templates, plan: store.Plan, phase: str | None, scheduled_at: datetime) -> dict[str, object]:
    """`countdown_values` of a plan in hand."""
    day = plan.local_day(scheduled_at)
    shown = phase or plan.phase_on(day)
    between = {"before": "campaign.phase_not_started", "after": "campaign.phase_after"}.get(plan.state_on(day),
                                                                                           "campaign.phase_gap")
    values: dict[str, object] = {"campaign": plan.campaign.title, "days_left": plan.days_left(day),
                                 "phase": store.phase_label(shown) if shown else templates.raw(between)}
    for name, when in plan.named_dates().items():
        values[f"days_until:{name}"] = (when - day).days
    return values


def error_text(templates: Templates, exc: store.CampaignError) -> str:
    """A campaign mistake in the operator's language (campaign.err_<key>); the English message if the
    templates have no text for it."""
    key = f"campaign.err_{exc.key}"
    try:
        return templates.render(key, **exc.values)
    except KeyError:
        return str(exc)
