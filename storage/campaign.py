"""Campaigns (活动): scheduled posts grouped into phases with dates, a key date with countdowns, milestone
reminders to ops, and the summary for the review. The tables and every domain function live here: the CLI
(`qunbot campaign`), the chat command (活动), the console and the reminder job (scheduler.campaign) call them.

A campaign has a name (unique among live campaigns), a title, a timezone, target groups (listed groups, a
tag, or all groups, as posts have), up to four phases — warm-up 预热, burst 爆发, long tail 长尾, review
复盘 — each a span of local days in the campaign's timezone (in that order, not overlapping), a key date
(the launch day) with a name, extra named dates, and ops contacts.

One set of domain functions, whoever asks (CLI, config file, 定时/活动 in chat, the console):
`create_campaign`, `update_campaign` (everything but its history; keeps posts and reminders consistent),
`remove_campaign`, `attach_post` / `detach_post`, `upsert_config_campaign` / `remove_config_campaigns_except`.
Callers write the audit log; these say what they changed (`CampaignEdit.detail`).

Posts belong to a campaign (push_posts.campaign_id) and optionally a phase (push_posts.phase). A post of a
phase fires only on the phase's days; a campaign post without a phase only on the campaign's days (first
phase's first day to last phase's last day). Firings outside are no firings at all: no run is recorded
(storage.push.record_run asks `fires_within`).

What the database guarantees:
- a lottery belongs to at most one campaign (unique key);
- a milestone reminder is one row per (campaign, milestone), inserted with ON CONFLICT DO NOTHING by
  whichever process finds it due, and sent by the process that claims it (a conditional UPDATE with a
  lease; the candidates are picked with FOR UPDATE SKIP LOCKED on PostgreSQL), so several processes remind
  once; a holder that died mid-send is replaced when its lease runs out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    CheckConstraint,
    Date,
    Index,
    Text,
    UniqueConstraint,
    and_,
    delete,
    distinct,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import Database, UTCDateTime, utcnow
from storage.groups import Group
from storage.push import ALL, DIRECT_SCOPE, GROUPS, TAG
from storage.upsert import insert_for

WARMUP, BURST, LONGTAIL, REVIEW = "warmup", "burst", "longtail", "review"
PHASES = (WARMUP, BURST, LONGTAIL, REVIEW)
PHASE_LABELS = {WARMUP: "预热", BURST: "爆发", LONGTAIL: "长尾", REVIEW: "复盘"}
_PHASE_WORDS = {**{p: p for p in PHASES}, **{label: p for p, label in PHASE_LABELS.items()},
                "warm-up": WARMUP, "warm_up": WARMUP, "long-tail": LONGTAIL, "long_tail": LONGTAIL}
DEFAULT_KEY_NAME = "关键日"
# {days_until:…} names that always mean the key date.
KEY_ALIASES = ("关键日", "key")
END_SUFFIX = "结束"
# Reminder states.
PENDING, SENDING, SENT, FAILED, SKIPPED = "pending", "sending", "sent", "failed", "skipped"
# The summary compares the campaign's days with this many days before it.
BASELINE_DAYS = 7
MAX_REMINDER_DAYS = 365


class Campaign(SQLModel, table=True):
    """A campaign: its targets, timezone, key date and ops contacts; phases and dates are rows of their own."""

    __tablename__ = "campaigns"
    __table_args__ = (
        Index("uq_campaigns_live_name", "name", unique=True, sqlite_where=text("removed_at IS NULL"),
              postgresql_where=text("removed_at IS NULL")),
        CheckConstraint("target_kind IN ('groups', 'tag', 'all')", name="target_kind"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    title: str = Field(max_length=128)
    # IANA zone its dates are read in (phases, the key date, reminder times, countdowns).
    timezone: str = Field(max_length=64)
    target_kind: str = Field(max_length=16)
    target_tag: str | None = Field(default=None, max_length=64)
    # Only groups on this door (tag and all targets); None for every door.
    target_channel: str | None = Field(default=None, max_length=32)
    key_date: date = Field(sa_type=Date)
    # What the key date is called in texts and in {days_until:NAME} ("开售", "直播日").
    key_name: str = Field(default=DEFAULT_KEY_NAME, max_length=32)
    # The ops contact shown in reminders and summaries ("张三 13800000000").
    owner: str = Field(default="", max_length=128)
    # Platform user ids the reminders @-mention (in a group) or message one to one (a door's 1:1 scope), "a|b".
    ops_users: str = Field(default="", max_length=512)
    # Where its reminders go, "channel:group" ("robot:ops", "wecom:@direct"); None: campaign.reminder_target.
    reminder_target: str | None = Field(default=None, max_length=160)
    # Days before the key date to remind on, "7,3,1"; None: campaign.reminder_days_before.
    reminder_days: str | None = Field(default=None, max_length=64)
    created_by: str = Field(default="", max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    removed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def ops(self) -> list[str]:
        return [u for u in self.ops_users.split("|") if u]


class CampaignGroup(SQLModel, table=True):
    """A listed target group of a campaign."""

    __tablename__ = "campaign_groups"

    campaign_id: int = Field(foreign_key="campaigns.id", primary_key=True)
    group_id: int = Field(foreign_key="groups.id", primary_key=True)


class CampaignPhase(SQLModel, table=True):
    """A phase of a campaign: its first and last local day (inclusive, in the campaign's timezone)."""

    __tablename__ = "campaign_phases"
    __table_args__ = (
        CheckConstraint("phase IN ('warmup', 'burst', 'longtail', 'review')", name="phase"),
        CheckConstraint("starts_on <= ends_on", name="span"),
    )

    campaign_id: int = Field(foreign_key="campaigns.id", primary_key=True)
    phase: str = Field(max_length=16, primary_key=True)
    starts_on: date = Field(sa_type=Date)
    ends_on: date = Field(sa_type=Date)


class CampaignDate(SQLModel, table=True):
    """An extra named date of a campaign, for {days_until:NAME} ("直播" → 2026-11-10)."""

    __tablename__ = "campaign_dates"

    campaign_id: int = Field(foreign_key="campaigns.id", primary_key=True)
    name: str = Field(max_length=32, primary_key=True)
    day: date = Field(sa_type=Date)


class CampaignLottery(SQLModel, table=True):
    """A lottery counted in a campaign's summary (a lottery belongs to one campaign at most)."""

    __tablename__ = "campaign_lotteries"
    __table_args__ = (UniqueConstraint("lottery_id", name="uq_campaign_lotteries_lottery_id"),)

    campaign_id: int = Field(foreign_key="campaigns.id", primary_key=True)
    lottery_id: int = Field(foreign_key="lotteries.id", primary_key=True)


class CampaignReminder(SQLModel, table=True):
    """A milestone reminder to a campaign's ops: one row per campaign and milestone, sent once."""

    __tablename__ = "campaign_reminders"
    __table_args__ = (
        UniqueConstraint("campaign_id", "milestone", name="uq_campaign_reminders_campaign_id_milestone"),
        Index("ix_campaign_reminders_claim", "channel", "status", "next_attempt_at"),
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name="status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaigns.id")
    # "phase:burst" (the phase starts) or "before:3" (three days before the key date).
    milestone: str = Field(max_length=32)
    due_at: datetime = Field(sa_type=UTCDateTime)
    # Where it goes: the door and the group on it (DIRECT_SCOPE: one to one to the ops users).
    channel: str = Field(default="", max_length=32)
    target: str = Field(default="", max_length=128)
    status: str = Field(default=PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    lease_holder: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Why it failed or was skipped; for others the last thing worth knowing (late, retried).
    reason: str = Field(default="", sa_type=Text)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# -- definitions, as people write them -------------------------------------------------------------------


class CampaignError(ValueError):
    """A mistake in a campaign's definition or use. `key` names its chat text (campaign.err_<key>);
    str() is English (the CLI's message)."""

    def __init__(self, key: str, message: str, **values: object) -> None:
        super().__init__(message)
        self.key = key
        self.values = values


def parse_phase(text_: str) -> str:
    """预热/爆发/长尾/复盘 or warmup/burst/longtail/review → the phase's key."""
    phase = _PHASE_WORDS.get(text_.strip().lower())
    if phase is None:
        raise CampaignError("phase", f"unknown phase {text_!r}: use 预热, 爆发, 长尾 or 复盘 "
                            "(warmup, burst, longtail, review)", text=text_)
    return phase


def phase_label(phase: str | None) -> str:
    return PHASE_LABELS.get(phase or "", phase or "")


_DAY = re.compile(r"^(?:(\d{4})[-/.年])?(\d{1,2})[-/.月](\d{1,2})日?$")


def parse_day(text_: str, *, year: int | None = None) -> date:
    """"2026-11-11" (or 2026/11/11, 2026年11月11日); without a year, `year`."""
    found = _DAY.match(text_.strip())
    if found is None or (found.group(1) is None and year is None):
        raise CampaignError("date", f"cannot read the date {text_!r}: write it like 2026-11-11", text=text_)
    try:
        return date(int(found.group(1) or year), int(found.group(2)), int(found.group(3)))  # type: ignore[arg-type]
    except ValueError:
        raise CampaignError("date", f"no such date {text_!r}", text=text_) from None


def parse_span(text_: str) -> tuple[date, date]:
    """A phase's days: "2026-11-01..2026-11-07" (also ~ 至 到, the second date may leave out the year) or one day."""
    parts = [p for p in re.split(r"\s*(?:\.\.|~|～|至|到|—|–)\s*", text_.strip()) if p]
    if len(parts) == 1:
        day = parse_day(parts[0])
        return day, day
    if len(parts) != 2:
        raise CampaignError("span", f"cannot read the days {text_!r}: write them like 2026-11-01..2026-11-07",
                            text=text_)
    first = parse_day(parts[0])
    last = parse_day(parts[1], year=first.year)
    if last < first:
        raise CampaignError("span", f"{text_!r} ends before it starts", text=text_)
    return first, last


def parse_target(text_: str) -> tuple[str, str]:
    """A reminder target "channel:group" ("robot:ops", "wecom:@direct")."""
    channel, sep, group = text_.strip().partition(":")
    if not sep or not re.fullmatch(r"[a-z_]{2,32}", channel) or not group.strip():
        raise CampaignError("target", f"a reminder target looks like robot:ops or wecom:{DIRECT_SCOPE}, "
                            f"got {text_!r}", text=text_)
    return channel, group.strip()


def parse_days_list(text_: str) -> tuple[int, ...]:
    """"7,3,1" → (7, 3, 1): days before the key date to remind on ("" for none)."""
    words = [w for w in re.split(r"[\s,，、]+", text_.strip()) if w]
    if not all(w.isdigit() and int(w) <= MAX_REMINDER_DAYS for w in words):
        raise CampaignError("days", f"reminder days are whole numbers 0..{MAX_REMINDER_DAYS} like 7,3,1, "
                            f"got {text_!r}", text=text_)
    return tuple(sorted({int(w) for w in words}, reverse=True))


@dataclass
class CampaignFields:
    """A campaign's definition, as the CLI, the config file and the console give it; `check()` says what is
    wrong, `normalized()` is the form stored (and compared: an unchanged definition changes nothing)."""

    name: str
    title: str
    timezone: str
    key_date: date
    phases: dict[str, tuple[date, date]]
    target_kind: str = ALL
    target_tag: str | None = None
    target_channel: str | None = None
    # Listed targets: group row ids.
    group_ids: tuple[int, ...] = ()
    key_name: str = DEFAULT_KEY_NAME
    dates: dict[str, date] = field(default_factory=dict)
    owner: str = ""
    ops_users: tuple[str, ...] = ()
    reminder_target: str | None = None
    reminder_days: tuple[int, ...] | None = None

    def check(self) -> None:
        from bot.push_spec import SpecError, check_timezone

        name = self.name.strip()
        if not 1 <= len(name) <= 64 or name.lstrip("#").isdigit() or any(c.isspace() for c in name):
            raise CampaignError("name", f"a campaign name is 1-64 characters without spaces and not a number, "
                                f"got {self.name!r}", text=self.name)
        if not 1 <= len(self.title.strip()) <= 128:
            raise CampaignError("title", "a title is 1-128 characters")
        try:
            check_timezone(self.timezone)
        except SpecError as exc:
            raise CampaignError("timezone", str(exc), tz=self.timezone) from None
        if self.target_kind not in (GROUPS, TAG, ALL) or (self.target_kind == TAG and not self.target_tag) or (
                self.target_kind == GROUPS and not self.group_ids):
            raise CampaignError("targets", "give the campaign's groups, a tag, or all groups")
        if not self.phases:
            raise CampaignError("phases", "give at least one phase with its days, e.g. 爆发=2026-11-08..2026-11-11")
        previous: tuple[str, date] | None = None
        for phase in PHASES:
            if phase not in self.phases:
                continue
            first, last = self.phases[phase]
            if last < first:
                raise CampaignError("span", f"phase {phase_label(phase)} ends before it starts", text=phase_label(phase))
            if previous is not None and first <= previous[1]:
                raise CampaignError("order", f"phase {phase_label(phase)} must start after {phase_label(previous[0])} "
                                    "ends (phases go 预热, 爆发, 长尾, 复盘 without overlapping)",
                                    phase=phase_label(phase), before=phase_label(previous[0]))
            previous = (phase, last)
        if not 1 <= len(self.key_name.strip()) <= 32:
            raise CampaignError("key_name", "the key date's name is 1-32 characters")
        reserved = set(_reserved_names(self.key_name))
        for name_ in self.dates:
            if not 1 <= len(name_) <= 32 or name_ in reserved or ":" in name_ or "}" in name_:
                raise CampaignError("date_name", f"{name_!r} cannot name a date (1-32 characters; not a phase, "
                                    "the key date's name or a phase name + 结束)", text=name_)
        if self.reminder_target:
            parse_target(self.reminder_target)
        if self.reminder_days is not None and any(not 0 <= d <= MAX_REMINDER_DAYS for d in self.reminder_days):
            raise CampaignError("days", f"reminder days are 0..{MAX_REMINDER_DAYS}", text=str(self.reminder_days))
        if any(not re.fullmatch(r"[^\s|]{1,128}", u) for u in self.ops_users):
            raise CampaignError("ops", "ops users are platform user ids without spaces", text=",".join(self.ops_users))

    def problems(self) -> list[CampaignError]:
        """Every mistake, not only the first `check()` stops at: each part found wrong is set aside and the
        rest checked again (a form shows them all at once)."""
        placeholder = {BURST: (self.key_date, self.key_date)}
        fixes: dict[str, dict[str, Any]] = {
            "name": {"name": "x"}, "title": {"title": "x"}, "timezone": {"timezone": "UTC"},
            "targets": {"target_kind": ALL}, "phases": {"phases": placeholder}, "span": {"phases": placeholder},
            "order": {"phases": placeholder}, "key_name": {"key_name": DEFAULT_KEY_NAME}, "date_name": {"dates": {}},
            "target": {"reminder_target": None}, "days": {"reminder_days": None}, "ops": {"ops_users": ()}}
        found: list[CampaignError] = []
        probe = self
        for _ in range(len(fixes) + 1):
            try:
                probe.check()
                break
            except CampaignError as exc:
                found.append(exc)
                if exc.key not in fixes:
                    break
                probe = replace(probe, **fixes[exc.key])
        return found

    def normalized(self) -> CampaignFields:
        """The definition as it is stored: trimmed texts, targets of its kind only, groups sorted, phases in order."""
        return replace(
            self, name=self.name.strip(), title=self.title.strip(), key_name=self.key_name.strip(),
            owner=self.owner.strip()[:128],
            target_tag=(self.target_tag or "").strip() or None if self.target_kind == TAG else None,
            target_channel=(self.target_channel or None) if self.target_kind != GROUPS else None,
            group_ids=tuple(sorted(set(self.group_ids))) if self.target_kind == GROUPS else (),
            phases={p: self.phases[p] for p in PHASES if p in self.phases},
            dates={n.strip(): d for n, d in sorted(self.dates.items(), key=lambda item: (item[1], item[0]))},
            ops_users=tuple(dict.fromkeys(u.strip() for u in self.ops_users if u.strip())),
            reminder_target=(self.reminder_target or "").strip() or None,
            reminder_days=None if self.reminder_days is None else tuple(sorted(set(self.reminder_days), reverse=True)))


def _reserved_names(key_name: str) -> list[str]:
    names = [key_name, *KEY_ALIASES]
    for phase, label in PHASE_LABELS.items():
        names += [label, phase, f"{label}{END_SUFFIX}", f"{phase}_end"]
    return names


# -- a campaign with its phases and dates ----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A campaign with its phases (in order) and extra dates: what the time arithmetic needs."""

    campaign: Campaign
    phases: dict[str, tuple[date, date]]
    dates: dict[str, date]

    @property
    def id(self) -> int:
        assert self.campaign.id is not None
        return self.campaign.id

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.campaign.timezone)

    def local_day(self, at: datetime) -> date:
        return at.astimezone(self.zone).date()

    def span(self) -> tuple[date, date]:
        """The campaign's days: its first phase's first day to its last phase's last day."""
        spans = list(self.phases.values())
        return min(s for s, _ in spans), max(e for _, e in spans)

    def phase_on(self, day: date) -> str | None:
        return next((p for p, (s, e) in self.phases.items() if s <= day <= e), None)

    def window(self, phase: str | None) -> tuple[datetime, datetime] | None:
        """[start, end) in UTC of a phase's days (or the campaign's days when `phase` is None); None for a
        phase the campaign does not have."""
        if phase is not None and phase not in self.phases:
            return None
        first, last = self.phases[phase] if phase is not None else self.span()
        utc = ZoneInfo("UTC")
        return (datetime.combine(first, time(), self.zone).astimezone(utc),
                datetime.combine(last + timedelta(days=1), time(), self.zone).astimezone(utc))

    def within(self, phase: str | None, at: datetime) -> bool:
        """Does a firing at `at` fall on the days of the phase (or of the campaign)?"""
        if phase is not None and phase not in self.phases:
            return False
        first, last = self.phases[phase] if phase is not None else self.span()
        return first <= self.local_day(at) <= last

    def named_dates(self) -> dict[str, date]:
        """Names {days_until:NAME} may use in the campaign's posts: the key date (its name, 关键日, key), each
        phase's first day (预热, warmup …) and last day (预热结束, warmup_end …), and the extra dates."""
        named = {name: self.campaign.key_date for name in (self.campaign.key_name, *KEY_ALIASES)}
        for phase, (first, last) in self.phases.items():
            label = PHASE_LABELS[phase]
            named.update({label: first, phase: first, f"{label}{END_SUFFIX}": last, f"{phase}_end": last})
        named.update(self.dates)
        return named

    def days_left(self, day: date) -> int:
        """Days from `day` to the key date (0 on the day, negative after)."""
        return (self.campaign.key_date - day).days

    def state_on(self, day: date) -> str:
        """"before", "during" (a phase or a gap between phases) or "after" the campaign's days."""
        first, last = self.span()
        return "before" if day < first else "after" if day > last else "during"


async def load_plan(session: AsyncSession, campaign: Campaign) -> Plan:
    assert campaign.id is not None
    phases = {p.phase: (p.starts_on, p.ends_on) for p in (await session.execute(
        select(CampaignPhase).where(CampaignPhase.campaign_id == campaign.id))).scalars()}
    dates = {d.name: d.day for d in (await session.execute(
        select(CampaignDate).where(CampaignDate.campaign_id == campaign.id).order_by(CampaignDate.day))).scalars()}
    return Plan(campaign, {p: phases[p] for p in PHASES if p in phases}, dates)


async def plan_of(session: AsyncSession, campaign_id: int) -> Plan | None:
    campaign = await session.get(Campaign, campaign_id)
    return None if campaign is None else await load_plan(session, campaign)


# -- campaigns -------------------------------------------------------------------------------------------


# Campaigns declared in the config file ([[campaigns]]) are upserted by name at start-up and carry this maker.
CONFIG_MAKER = "config"


@dataclass(frozen=True)
class CampaignSettings:
    """What edits need from the configuration: when and how milestones remind (campaign.*), to re-plan them,
    and push.dates, to check the campaign's posts still name only dates that exist."""

    reminder_time: time = time(10, 0)
    reminder_days_before: tuple[int, ...] = (7, 3, 1)
    reminder_target: str = ""
    push_dates: Mapping[str, date] = field(default_factory=dict)


def _columns(fields: CampaignFields) -> dict[str, Any]:
    """The campaigns row of a normalized definition."""
    return {"name": fields.name, "title": fields.title, "timezone": fields.timezone, "target_kind": fields.target_kind,
            "target_tag": fields.target_tag, "target_channel": fields.target_channel, "key_date": fields.key_date,
            "key_name": fields.key_name, "owner": fields.owner, "ops_users": "|".join(fields.ops_users),
            "reminder_target": fields.reminder_target,
            "reminder_days": None if fields.reminder_days is None else ",".join(str(d) for d in fields.reminder_days)}


def plan_from_fields(fields: CampaignFields, *, campaign_id: int | None = None,
                     created_at: datetime | None = None) -> Plan:
    """A plan of a definition not (yet) stored: what previews and checks of an edit compute with."""
    fields = fields.normalized()
    campaign = Campaign(id=campaign_id, created_at=created_at or utcnow(), **_columns(fields))
    return Plan(campaign, dict(fields.phases), dict(fields.dates))


async def _name_free(session: AsyncSession, name: str, campaign_id: int | None) -> None:
    taken = (await session.execute(select(Campaign.id).where(Campaign.name == name, Campaign.removed_at.is_(None))  # type: ignore[union-attr]
                                   )).scalar_one_or_none()
    if taken is not None and taken != campaign_id:
        raise CampaignError("name_taken", f"a live campaign is already named {name!r}", name=name)


async def _write_parts(session: AsyncSession, campaign_id: int, fields: CampaignFields) -> None:
    """The campaign's listed groups, phases and dates, replacing what it had."""
    for table in (CampaignGroup, CampaignPhase, CampaignDate):
        await session.execute(delete(table).where(table.campaign_id == campaign_id))  # type: ignore[attr-defined]
    for group_id in fields.group_ids:
        session.add(CampaignGroup(campaign_id=campaign_id, group_id=group_id))
    for phase, (first, last) in fields.phases.items():
        session.add(CampaignPhase(campaign_id=campaign_id, phase=phase, starts_on=first, ends_on=last))
    for name, day in fields.dates.items():
        session.add(CampaignDate(campaign_id=campaign_id, name=name, day=day))
    await session.flush()


async def create_campaign(session: AsyncSession, fields: CampaignFields, *, created_by: str, now: datetime) -> Campaign:
    """Create a checked campaign; CampaignError "name_taken" if a live campaign has its name (IntegrityError
    if another process made one a moment ago)."""
    fields = fields.normalized()
    fields.check()
    await _name_free(session, fields.name, None)
    campaign = Campaign(**_columns(fields), created_by=created_by[:128], created_at=now, updated_at=now)
    session.add(campaign)
    await session.flush()
    assert campaign.id is not None
    await _write_parts(session, campaign.id, fields)
    return campaign


async def fields_of(session: AsyncSession, plan: Plan) -> CampaignFields:
    """The stored definition of a campaign, in the form `update_campaign` takes (edit a copy, pass it back)."""
    c = plan.campaign
    groups = await listed_groups(session, plan.id) if c.target_kind == GROUPS else []
    return CampaignFields(
        name=c.name, title=c.title, timezone=c.timezone, key_date=c.key_date, phases=dict(plan.phases),
        target_kind=c.target_kind, target_tag=c.target_tag, target_channel=c.target_channel,
        group_ids=tuple(g.id for g in groups), key_name=c.key_name, dates=dict(plan.dates), owner=c.owner,  # type: ignore[misc]
        ops_users=tuple(c.ops), reminder_target=c.reminder_target,
        reminder_days=None if c.reminder_days is None else parse_days_list(c.reminder_days)).normalized()


@dataclass
class CampaignEdit:
    """What an edit did: the campaign as it is now, what changed, the posts that followed it (their targets
    or timezone were the campaign's), and what happened to its milestone reminders."""

    campaign: Campaign
    changed: list[str]
    posts_followed: list[int] = field(default_factory=list)
    reminders: list[str] = field(default_factory=list)

    @property
    def detail(self) -> str:
        """One line for the audit log."""
        if not self.changed:
            return f"campaign {self.campaign.id} {self.campaign.name}: no change"
        parts = [f"campaign {self.campaign.id} {self.campaign.name} edited: {', '.join(self.changed)}"]
        if self.posts_followed:
            parts.append(f"posts {', '.join(map(str, self.posts_followed))} follow its targets/timezone")
        if self.reminders:
            parts.append("reminders: " + "; ".join(self.reminders))
        return "; ".join(parts)


def _differences(before: CampaignFields, after: CampaignFields) -> list[str]:
    """What an edit changes, in the order of the definition."""
    parts = {"name": ("name",), "title": ("title",), "timezone": ("timezone",),
             "targets": ("target_kind", "target_tag", "target_channel", "group_ids"), "key date": ("key_date",),
             "key name": ("key_name",), "phases": ("phases",), "dates": ("dates",), "owner": ("owner",),
             "ops": ("ops_users",), "reminder target": ("reminder_target",), "reminder days": ("reminder_days",)}
    return [label for label, attrs in parts.items()
            if any(getattr(before, attr) != getattr(after, attr) for attr in attrs)]


def check_posts_fit(plan: Plan, posts: list[Any], settings: CampaignSettings) -> None:
    """The campaign's live posts must still make sense: their phase exists, and every {days_until:NAME} they
    use still names a date (CampaignError otherwise, naming the posts)."""
    from bot.push_spec import SpecError, check_content

    missing = [p for p in posts if p.phase is not None and p.phase not in plan.phases]
    if missing:
        phase = missing[0].phase
        ids = ", ".join(str(p.id) for p in missing if p.phase == phase)
        raise CampaignError("phase_in_use", f"phase {phase_label(phase)} has post(s) {ids}: move them to another "
                            "phase or detach them first", phase=phase_label(phase), posts=ids)
    dates = {**settings.push_dates, **plan.named_dates()}
    for post in posts:
        try:
            check_content(post.content, dates, campaign=True)
        except SpecError as exc:
            raise CampaignError("post_content", f"post {post.id} would no longer work: {exc}", id=post.id,
                                problem=str(exc)) from None


async def update_campaign(session: AsyncSession, campaign_id: int, fields: CampaignFields, *, now: datetime,
                          settings: CampaignSettings) -> CampaignEdit:
    """Change a live campaign's definition (name, title, timezone, targets, key date, phases, dates, owner,
    ops users, reminders), keeping what hangs on it consistent:
    - its runs, deliveries and figures stay as they are (a run fired within its phase keeps going);
    - its posts that took the campaign's targets (or timezone) take the new ones; a phase that still has
      posts, or a date a post's content names, cannot be dropped (CampaignError, naming the posts);
    - milestone reminders are re-planned (`replan_reminders`): sent ones are never sent again.
    The same definition changes nothing (no `updated_at`, CampaignEdit.changed empty)."""
    from storage import push as push_store

    fields = fields.normalized()
    fields.check()
    # One edit at a time per campaign (PostgreSQL; SQLite has one writer anyway): its parts are rewritten.
    await session.execute(select(Campaign.id).where(Campaign.id == campaign_id).with_for_update())
    campaign = await get_campaign(session, campaign_id)
    if campaign is None:
        raise CampaignError("not_found", f"no live campaign {campaign_id}", name=str(campaign_id))
    old = await load_plan(session, campaign)
    before = await fields_of(session, old)
    if before == fields:
        return CampaignEdit(campaign, [])
    await _name_free(session, fields.name, campaign_id)
    posts = await posts_of(session, campaign_id, include_removed=False)
    check_posts_fit(plan_from_fields(fields, campaign_id=campaign_id, created_at=campaign.created_at), posts, settings)
    changed = _differences(before, fields)
    await session.execute(update(Campaign).where(Campaign.id == campaign_id).values(**_columns(fields), updated_at=now))
    await _write_parts(session, campaign_id, fields)
    fresh = await get_campaign(session, campaign_id)
    assert fresh is not None
    new = await load_plan(session, fresh)

    followed: list[int] = []
    for post in posts:
        post_groups = tuple(sorted(g.id for g in await push_store.listed_groups(session, post.id)))  # type: ignore[misc]
        same_targets = (post.target_kind, post.target_tag, post.target_channel) == (
            before.target_kind, before.target_tag, before.target_channel) and (
            post.target_kind != GROUPS or post_groups == before.group_ids)
        follows = {}
        if "targets" in changed and same_targets:
            follows = {"target_kind": fields.target_kind, "target_tag": fields.target_tag,
                       "target_channel": fields.target_channel, "group_ids": fields.group_ids}
        timezone = fields.timezone if "timezone" in changed and post.timezone == before.timezone else post.timezone
        if not follows and timezone == post.timezone:
            continue
        targets = follows or {"target_kind": post.target_kind, "target_tag": post.target_tag,
                              "target_channel": post.target_channel, "group_ids": post_groups}
        await push_store.update_post(session, post.id, push_store.PostFields(
            schedule=post.schedule, schedule_text=post.schedule_text, timezone=timezone, content=post.content,
            kind=post.kind, payload=post.payload_data, name=post.name, **targets), now)
        followed.append(post.id)
    notes = await replan_reminders(session, old, new, settings, now)
    return CampaignEdit(fresh, changed, followed, notes)


async def upsert_config_campaign(session: AsyncSession, fields: CampaignFields, *, now: datetime,
                                 settings: CampaignSettings) -> tuple[CampaignEdit, str]:
    """A campaign declared in the config file, by name: "created", "updated" or "unchanged". Every process
    does this at start; the same declaration changes nothing. A live campaign of that name made elsewhere is
    taken over (the file decides from then on)."""
    found = await session.execute(select(Campaign).where(Campaign.name == fields.name.strip(),
                                                         Campaign.removed_at.is_(None)).with_for_update())  # type: ignore[union-attr]
    campaign = found.scalar_one_or_none()
    if campaign is None:
        made = await create_campaign(session, fields, created_by=CONFIG_MAKER, now=now)
        return CampaignEdit(made, ["created"]), "created"
    assert campaign.id is not None
    edit = await update_campaign(session, campaign.id, fields, now=now, settings=settings)
    if campaign.created_by != CONFIG_MAKER:
        await session.execute(update(Campaign).where(Campaign.id == campaign.id).values(created_by=CONFIG_MAKER,
                                                                                        updated_at=now))
        edit.changed.append("taken over by the config file")
    return edit, "updated" if edit.changed else "unchanged"


async def remove_config_campaigns_except(session: AsyncSession, names: set[str], now: datetime) -> list[tuple[Campaign, list[int]]]:
    """Campaigns from the config file that it no longer declares are removed, with their posts (history
    stays); each with the posts removed."""
    rows = await session.execute(select(Campaign).where(Campaign.created_by == CONFIG_MAKER,
                                                        Campaign.removed_at.is_(None)))  # type: ignore[union-attr]
    gone = []
    for campaign in [c for c in rows.scalars() if c.name not in names]:
        gone.append((campaign, await remove_campaign(session, campaign.id, now)))  # type: ignore[arg-type]
    return gone


async def get_campaign(session: AsyncSession, ref: int | str, *, include_removed: bool = False) -> Campaign | None:
    """A campaign by number ("3", "#3") or live name."""
    query = select(Campaign)
    text_ref = str(ref).strip()
    if text_ref.lstrip("#").isdigit():
        query = query.where(Campaign.id == int(text_ref.lstrip("#")))
    else:
        query = query.where(Campaign.name == text_ref, Campaign.removed_at.is_(None))  # type: ignore[union-attr]
    if not include_removed:
        query = query.where(Campaign.removed_at.is_(None))  # type: ignore[union-attr]
    return (await session.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()


async def list_campaigns(session: AsyncSession, *, include_removed: bool = False) -> list[Campaign]:
    query = select(Campaign).order_by(Campaign.id)  # type: ignore[arg-type]
    if not include_removed:
        query = query.where(Campaign.removed_at.is_(None))  # type: ignore[union-attr]
    return list((await session.execute(query)).scalars())


def group_conditions(campaign: Campaign) -> list[Any]:
    """WHERE conditions on groups for the campaign's targets (as storage.push.target_conditions for posts)."""
    if campaign.target_kind == GROUPS:
        return [Group.id.in_(select(CampaignGroup.group_id).where(CampaignGroup.campaign_id == campaign.id))]  # type: ignore[union-attr]
    from storage.push import PushGroupTag

    conditions: list[Any] = [Group.dismissed_at.is_(None), Group.external_id != DIRECT_SCOPE]  # type: ignore[union-attr]
    if campaign.target_channel:
        conditions.append(Group.channel == campaign.target_channel)
    if campaign.target_kind == TAG:
        conditions.append(Group.id.in_(select(PushGroupTag.group_id).where(PushGroupTag.tag == campaign.target_tag)))  # type: ignore[union-attr]
    return conditions


async def listed_groups(session: AsyncSession, campaign_id: int) -> list[Group]:
    rows = await session.execute(select(Group).join(CampaignGroup, CampaignGroup.group_id == Group.id)
                                 .where(CampaignGroup.campaign_id == campaign_id).order_by(Group.id))
    return list(rows.scalars())


async def groups_of(session: AsyncSession, campaign: Campaign) -> list[Group]:
    """The campaign's groups now."""
    rows = await session.execute(select(Group).where(*group_conditions(campaign)).order_by(Group.id))
    return list(rows.scalars())


async def campaigns_of_group(session: AsyncSession, group_id: int) -> list[Campaign]:
    """The live campaigns whose targets include the group."""
    found = []
    for campaign in await list_campaigns(session):
        hit = await session.execute(select(Group.id).where(Group.id == group_id, *group_conditions(campaign)))
        if hit.first() is not None:
            found.append(campaign)
    return found


async def remove_campaign(session: AsyncSession, campaign_id: int, now: datetime) -> list[int]:
    """Remove a campaign and its live posts (their runs stay; pending deliveries and reminders are skipped);
    the posts removed. Its history (runs, reminders, linked lotteries) stays for the summary."""
    from storage import push as push_store

    result = await session.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.removed_at.is_(None))  # type: ignore[union-attr]
                                   .values(removed_at=now, updated_at=now))
    if not result.rowcount:
        return []
    posts = await posts_of(session, campaign_id)
    removed = []
    for post in posts:
        if post.removed_at is None and await push_store.remove_post(session, post.id, now):  # type: ignore[arg-type]
            removed.append(post.id)
    await session.execute(update(CampaignReminder).where(CampaignReminder.campaign_id == campaign_id,
                                                         CampaignReminder.status == PENDING)
                          .values(status=SKIPPED, reason="campaign removed", updated_at=now))
    return removed  # type: ignore[return-value]


async def posts_of(session: AsyncSession, campaign_id: int, *, include_removed: bool = True) -> list[Any]:
    """The campaign's posts (storage.push.PushPost), by phase then number."""
    from storage.push import PushPost

    query = select(PushPost).where(PushPost.campaign_id == campaign_id).order_by(PushPost.id)  # type: ignore[arg-type]
    if not include_removed:
        query = query.where(PushPost.removed_at.is_(None))  # type: ignore[union-attr]
    return list((await session.execute(query)).scalars())


async def post_targets(session: AsyncSession, campaign: Campaign) -> dict[str, Any]:
    """A post added to the campaign without targets of its own takes the campaign's (PostFields keywords)."""
    groups = await listed_groups(session, campaign.id) if campaign.target_kind == GROUPS else []  # type: ignore[arg-type]
    return {"target_kind": campaign.target_kind, "target_tag": campaign.target_tag,
            "target_channel": campaign.target_channel, "group_ids": tuple(g.id for g in groups)}


def check_phase(plan: Plan, phase: str | None) -> None:
    """A post may join `phase` of the campaign (None: all its days); CampaignError "no_phase" otherwise."""
    if phase is not None and phase not in plan.phases:
        have = ", ".join(phase_label(p) for p in plan.phases)
        raise CampaignError("no_phase", f"campaign {plan.campaign.name} has no {phase_label(phase)} phase "
                            f"(its phases: {have})", campaign=plan.campaign.title, phase=phase_label(phase),
                            have="、".join(phase_label(p) for p in plan.phases))


async def _live_post(session: AsyncSession, post_id: int) -> Any:
    from storage import push as push_store

    post = await push_store.get_post(session, post_id)
    if post is None:
        raise CampaignError("post_not_found", f"no live post {post_id}", id=post_id)
    return post


async def attach_post(session: AsyncSession, campaign_id: int, post_id: int, phase: str | None, *,
                      now: datetime) -> tuple[Any, bool]:
    """Make a post one of the campaign's, in `phase` (None: on every day of the campaign), or move it to
    another phase of it: from then on it fires only on those days and may use the countdown variables.
    Runs it already had stay. (post, whether anything changed); CampaignError if the campaign or post is
    gone, the campaign lacks the phase, or the post belongs to another campaign (detach it there first)."""
    from storage.push import PushPost

    campaign = await get_campaign(session, campaign_id)
    if campaign is None:
        raise CampaignError("not_found", f"no live campaign {campaign_id}", name=str(campaign_id))
    check_phase(await load_plan(session, campaign), phase)
    post = await _live_post(session, post_id)
    if post.campaign_id is not None and post.campaign_id != campaign_id:
        other = await session.get(Campaign, post.campaign_id)
        raise CampaignError("post_taken", f"post {post_id} belongs to campaign {other.name if other else post.campaign_id}: "
                            "detach it there first", id=post_id, campaign=other.title if other else str(post.campaign_id))
    if (post.campaign_id, post.phase) == (campaign_id, phase):
        return post, False
    await session.execute(update(PushPost).where(PushPost.id == post_id).values(
        campaign_id=campaign_id, phase=phase, updated_at=now, revision=PushPost.revision + 1))
    return await _live_post(session, post_id), True


async def detach_post(session: AsyncSession, post_id: int, *, now: datetime, settings: CampaignSettings,
                      campaign_id: int | None = None) -> tuple[Any, bool]:
    """Take a post out of its campaign: it fires on every day of its schedule again. Refused while its content
    uses the campaign's variables ({campaign}, {days_left}, its dates): they would mean nothing outside it.
    With `campaign_id`, only a post of that campaign. (post, whether anything changed)."""
    from bot.push_spec import SpecError, check_content
    from storage.push import PushPost

    post = await _live_post(session, post_id)
    if post.campaign_id is None:
        return post, False
    if campaign_id is not None and post.campaign_id != campaign_id:
        raise CampaignError("post_not_in", f"post {post_id} is not in campaign {campaign_id}", id=post_id)
    try:
        check_content(post.content, settings.push_dates)
    except SpecError as exc:
        raise CampaignError("post_uses_campaign", f"post {post_id} uses the campaign's variables ({exc}): change "
                            "its content first", id=post_id) from None
    await session.execute(update(PushPost).where(PushPost.id == post_id).values(
        campaign_id=None, phase=None, updated_at=now, revision=PushPost.revision + 1))
    return await _live_post(session, post_id), True


async def fires_within(session: AsyncSession, campaign_id: int, phase: str | None, at: datetime) -> bool:
    """Does a firing of a campaign post (of `phase`, or of none) at `at` fall on its days? False for a removed
    campaign."""
    plan = await plan_of(session, campaign_id)
    return plan is not None and plan.campaign.removed_at is None and plan.within(phase, at)


async def post_window(session: AsyncSession, post: Any) -> tuple[datetime, datetime] | None:
    """The [start, end) in UTC a post (storage.push.PushPost) may fire in, for previews: None for a post of
    no campaign, an empty window for a removed campaign's or a phase the campaign lacks."""
    if post.campaign_id is None:
        return None
    plan = await plan_of(session, post.campaign_id)
    window = plan.window(post.phase) if plan is not None and plan.campaign.removed_at is None else None
    return window or (plan_epoch(), plan_epoch())


def plan_epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))


# -- lotteries -------------------------------------------------------------------------------------------


async def link_lottery(session: AsyncSession, campaign_id: int, lottery_id: int) -> bool:
    """Count a lottery in the campaign; False if it already was. CampaignError if another campaign has it."""
    from storage.lottery import Lottery

    if await session.get(Lottery, lottery_id) is None:
        raise CampaignError("lottery", f"no lottery {lottery_id}", id=lottery_id)
    owner = (await session.execute(select(CampaignLottery.campaign_id)
                                   .where(CampaignLottery.lottery_id == lottery_id))).scalar_one_or_none()
    if owner is not None:
        if owner == campaign_id:
            return False
        raise CampaignError("lottery_taken", f"lottery {lottery_id} belongs to campaign {owner}", id=lottery_id)
    result = await session.execute(insert_for(session, CampaignLottery).values(campaign_id=campaign_id,
                                                                               lottery_id=lottery_id)
                                   .on_conflict_do_nothing())
    return bool(result.rowcount)


async def unlink_lottery(session: AsyncSession, campaign_id: int, lottery_id: int) -> bool:
    result = await session.execute(delete(CampaignLottery).where(CampaignLottery.campaign_id == campaign_id,
                                                                 CampaignLottery.lottery_id == lottery_id))
    return bool(result.rowcount)


# -- milestone reminders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Milestone:
    """A moment ops hear about: a phase starts ("phase:burst"), or N days to the key date ("before:3")."""

    key: str
    due_at: datetime
    phase: str | None = None
    days: int | None = None


def reminder_days(campaign: Campaign, default: tuple[int, ...]) -> tuple[int, ...]:
    return default if campaign.reminder_days is None else parse_days_list(campaign.reminder_days)


def milestones(plan: Plan, *, at: time, days_before: tuple[int, ...]) -> list[Milestone]:
    """Every milestone of the campaign, at local time `at` of its day (campaign timezone), oldest first."""
    utc = ZoneInfo("UTC")
    found = [Milestone(f"phase:{phase}", datetime.combine(first, at, plan.zone).astimezone(utc), phase=phase)
             for phase, (first, _) in plan.phases.items()]
    found += [Milestone(f"before:{n}", datetime.combine(plan.campaign.key_date - timedelta(days=n), at, plan.zone)
                        .astimezone(utc), days=n) for n in days_before]
    return sorted(found, key=lambda m: (m.due_at, m.key))


def milestone_of(plan: Plan, key: str, *, at: time) -> Milestone | None:
    """The milestone a reminder row names (None if the campaign no longer has it)."""
    kind, _, arg = key.partition(":")
    days = (int(arg),) if kind == "before" and arg.isdigit() else ()
    return next((m for m in milestones(plan, at=at, days_before=days) if m.key == key), None)


@dataclass(frozen=True)
class ReminderRoute:
    """Where a campaign's reminders go now: a door and a group on it, or why they cannot go anywhere."""

    channel: str = ""
    target: str = ""
    problem: str = ""


def reminder_route(campaign: Campaign, default_target: str) -> ReminderRoute:
    where = campaign.reminder_target or default_target
    if not where:
        return ReminderRoute(problem="no reminder target: set campaign.reminder_target or the campaign's --remind-to")
    try:
        channel, target = parse_target(where)
    except CampaignError as exc:
        return ReminderRoute(problem=str(exc))
    if target == DIRECT_SCOPE and not campaign.ops:
        return ReminderRoute(channel, target, problem=f"no ops users to message one to one on {channel} (--ops)")
    return ReminderRoute(channel, target)


async def known_milestones(session: AsyncSession, campaign_id: int) -> set[str]:
    rows = await session.execute(select(CampaignReminder.milestone).where(CampaignReminder.campaign_id == campaign_id))
    return set(rows.scalars())


async def record_reminders(session: AsyncSession, plan: Plan, due: list[Milestone], *, route: ReminderRoute,
                           now: datetime, grace_seconds: float) -> list[int]:
    """Record due milestones (each once, whoever comes first): pending, or skipped with the reason when it
    was found more than `grace_seconds` late or cannot go anywhere. The ids of the rows this call made."""
    made: list[int] = []
    for milestone in due:
        late = (now - milestone.due_at).total_seconds()
        if late > grace_seconds:
            status, reason = SKIPPED, f"missed: found {_hours(late)} after its time (grace {_hours(grace_seconds)})"
        elif route.problem:
            status, reason = SKIPPED, route.problem
        else:
            status, reason = PENDING, "late" if late > 300 else ""
        stmt = (insert_for(session, CampaignReminder)
                .values(campaign_id=plan.id, milestone=milestone.key, due_at=milestone.due_at, channel=route.channel,
                        target=route.target, status=status, attempts=0, next_attempt_at=now, reason=reason,
                        created_at=now, updated_at=now)
                .on_conflict_do_nothing(index_elements=["campaign_id", "milestone"])
                .returning(CampaignReminder.id))
        made_id = (await session.execute(stmt)).scalar_one_or_none()
        if made_id is not None:
            made.append(made_id)
    return made


async def replan_reminders(session: AsyncSession, old: Plan, new: Plan, settings: CampaignSettings,
                           now: datetime) -> list[str]:
    """After an edit, make the campaign's reminder rows agree with its milestones now; what was done, for the
    audit log. Sent (or sending) reminders are never touched, so nothing is sent twice. A milestone that
    moved to a later time loses its unsent row (the reminder job records it again when it is due); one
    that is gone is skipped if still pending; pending ones follow a new reminder target. A milestone the
    edit made due already (a phase moved into the past) is recorded as skipped: ops made that change
    knowingly, and a reminder of it now would be stale."""
    def keyed(plan: Plan) -> dict[str, Milestone]:
        days = reminder_days(plan.campaign, settings.reminder_days_before)
        return {m.key: m for m in milestones(plan, at=settings.reminder_time, days_before=days)}

    before, after = keyed(old), keyed(new)
    route = reminder_route(new.campaign, settings.reminder_target)
    notes: list[str] = []

    def local(at: datetime) -> str:
        return f"{at.astimezone(new.zone):%Y-%m-%d %H:%M}"

    rows = await reminders_of(session, new.id)
    kept: set[str] = set()
    for row in rows:
        kept.add(row.milestone)
        if row.status in (SENT, SENDING):
            continue
        milestone = after.get(row.milestone)
        if milestone is None:
            if row.status == PENDING:
                await session.execute(update(CampaignReminder).where(CampaignReminder.id == row.id).values(
                    status=SKIPPED, reason="no longer a milestone of the campaign (edited)", updated_at=now))
                notes.append(f"{row.milestone} dropped")
            continue
        if milestone.due_at != row.due_at:
            if milestone.due_at > now:
                await session.execute(delete(CampaignReminder).where(CampaignReminder.id == row.id))
                kept.discard(row.milestone)
                notes.append(f"{row.milestone} re-planned for {local(milestone.due_at)}")
            elif row.status == PENDING:
                await session.execute(update(CampaignReminder).where(CampaignReminder.id == row.id).values(
                    due_at=milestone.due_at, updated_at=now))
            continue
        if row.status == PENDING and (row.channel, row.target) != (route.channel, route.target):
            values: dict[str, Any] = ({"status": SKIPPED, "reason": route.problem} if route.problem else
                                      {"channel": route.channel, "target": route.target, "next_attempt_at": now})
            await session.execute(update(CampaignReminder).where(CampaignReminder.id == row.id,
                                                                 CampaignReminder.status == PENDING)
                                  .values(updated_at=now, **values))
            notes.append(f"{row.milestone} now goes to {route.channel}:{route.target}" if not route.problem
                         else f"{row.milestone} skipped: {route.problem}")
    first_day = new.local_day(new.campaign.created_at)
    for key, milestone in after.items():
        if milestone.due_at > now or key in kept or new.local_day(milestone.due_at) < first_day:
            continue
        if key in before and before[key].due_at <= now:
            continue  # due before the edit too: the reminder job records it as usual
        await session.execute(insert_for(session, CampaignReminder).values(
            campaign_id=new.id, milestone=key, due_at=milestone.due_at, channel=route.channel, target=route.target,
            status=SKIPPED, attempts=0, next_attempt_at=now, created_at=now, updated_at=now,
            reason=f"already past when the campaign was edited ({local(now)})").on_conflict_do_nothing(
            index_elements=["campaign_id", "milestone"]))
        notes.append(f"{key} ({local(milestone.due_at)}) already past: not reminded")
    return notes


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


@dataclass(frozen=True)
class ClaimedReminder:
    id: int
    campaign_id: int
    milestone: str
    due_at: datetime
    channel: str
    target: str
    attempts: int


def _reminder_due(now: datetime) -> Any:
    return or_(and_(CampaignReminder.status == PENDING, CampaignReminder.next_attempt_at <= now),  # type: ignore[arg-type]
               and_(CampaignReminder.status == SENDING, CampaignReminder.lease_until < now))  # type: ignore[operator]


async def claim_reminders(db: Database, *, channels: list[str], holder: str, now: datetime, lease_seconds: float,
                          limit: int = 20) -> list[ClaimedReminder]:
    """Take due reminders on these doors, each with a lease (a dead holder's are taken again after it)."""
    if not channels:
        return []
    async with db.session() as session:
        candidates = (select(CampaignReminder.id)
                      .where(CampaignReminder.channel.in_(channels), _reminder_due(now))  # type: ignore[attr-defined]
                      .order_by(CampaignReminder.next_attempt_at, CampaignReminder.id).limit(limit))  # type: ignore[arg-type]
        if db.dialect == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        stmt = (update(CampaignReminder)
                .where(CampaignReminder.id.in_(candidates.scalar_subquery()), _reminder_due(now))  # type: ignore[union-attr]
                .values(status=SENDING, lease_holder=holder, lease_until=now + timedelta(seconds=lease_seconds),
                        attempts=CampaignReminder.attempts + 1, updated_at=now)
                .returning(CampaignReminder.id, CampaignReminder.campaign_id, CampaignReminder.milestone,
                           CampaignReminder.due_at, CampaignReminder.channel, CampaignReminder.target,
                           CampaignReminder.attempts))
        rows = (await session.execute(stmt)).all()
    return sorted((ClaimedReminder(*row) for row in rows), key=lambda r: r.id)


async def finish_reminder(db: Database, reminder_id: int, holder: str, *, status: str, reason: str | None,
                          now: datetime) -> bool:
    """Record a claimed reminder's outcome (only its holder may); False if the claim was lost."""
    values: dict[str, Any] = {"status": status, "lease_holder": None, "lease_until": None, "updated_at": now}
    if reason is not None:
        values["reason"] = reason[:2000]
    if status == SENT:
        values["sent_at"] = now
    async with db.session() as session:
        result = await session.execute(update(CampaignReminder).where(
            CampaignReminder.id == reminder_id, CampaignReminder.lease_holder == holder,
            CampaignReminder.status == SENDING).values(**values))
        return bool(result.rowcount)


async def retry_reminder(db: Database, reminder_id: int, holder: str, *, at: datetime, reason: str, now: datetime,
                         counts: bool = True) -> bool:
    """Put a claimed reminder back for `at`; `counts=False`: this try was no attempt (rate limited)."""
    values: dict[str, Any] = {"status": PENDING, "next_attempt_at": at, "reason": reason[:2000],
                              "lease_holder": None, "lease_until": None, "updated_at": now}
    if not counts:
        values["attempts"] = CampaignReminder.attempts - 1
    async with db.session() as session:
        result = await session.execute(update(CampaignReminder).where(
            CampaignReminder.id == reminder_id, CampaignReminder.lease_holder == holder,
            CampaignReminder.status == SENDING).values(**values))
        return bool(result.rowcount)


async def fail_stale_reminders(db: Database, *, now: datetime, grace_seconds: float) -> int:
    """Reminders still pending `grace_seconds` after their time (their door is in no running process, or it
    kept refusing politely): recorded as failed with the reason, so nothing waits forever unseen."""
    async with db.session() as session:
        stale = now - timedelta(seconds=grace_seconds)
        rows = (await session.execute(select(CampaignReminder.id, CampaignReminder.channel, CampaignReminder.reason)
                                      .where(CampaignReminder.status == PENDING, CampaignReminder.due_at < stale)
                                      .limit(1000))).all()
        for reminder_id, channel, last in rows:
            why = f"last: {last}" if last and last != "late" else (
                f"no running process sent it through the {channel} door")
            await session.execute(update(CampaignReminder).where(CampaignReminder.id == reminder_id,
                                                                 CampaignReminder.status == PENDING)
                                  .values(status=FAILED, updated_at=now,
                                          reason=f"not sent within {_hours(grace_seconds)} of its time: {why}"[:2000]))
        return len(rows)


async def reminders_of(session: AsyncSession, campaign_id: int) -> list[CampaignReminder]:
    rows = await session.execute(select(CampaignReminder).where(CampaignReminder.campaign_id == campaign_id)
                                 .order_by(CampaignReminder.due_at, CampaignReminder.id))  # type: ignore[arg-type]
    return list(rows.scalars())


# -- the summary for the review --------------------------------------------------------------------------


@dataclass
class PostFigures:
    """Deliveries of a campaign's posts (one group and one run each) by outcome; `late`: sent, late."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0
    late: int = 0

    def add(self, status: str, late: bool, count: int) -> None:
        from storage import push as push_store

        if status == push_store.SENT:
            self.sent += count
            self.late += count if late else 0
        elif status == push_store.FAILED:
            self.failed += count
        elif status == push_store.SKIPPED:
            self.skipped += count
        else:
            self.pending += count


@dataclass(frozen=True)
class LotteryFigures:
    id: int
    title: str
    group: str
    status: str
    entrants: int
    winners: int


@dataclass(frozen=True)
class Window:
    """Check-ins and activity in the campaign's groups over some days."""

    first: date
    last: date
    checkins: int
    checkin_members: int
    active_members: int
    messages: int

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def checkins_per_day(self) -> float:
        return self.checkins / self.days if self.days > 0 else 0.0


@dataclass
class Summary:
    """A campaign's figures for the review (one group's with `group_id`)."""

    plan: Plan
    today: date
    group_id: int | None
    posts: int
    runs: int
    # Runs recorded as skipped (missed after downtime, superseded): no deliveries at all.
    runs_skipped: int
    total: PostFigures
    by_phase: dict[str, PostFigures]
    lotteries: list[LotteryFigures]
    unique_entrants: int
    groups: int
    during: Window | None
    before: Window

    @property
    def entrants(self) -> int:
        return sum(lot.entrants for lot in self.lotteries)

    @property
    def winners(self) -> int:
        return sum(lot.winners for lot in self.lotteries)


async def summary(session: AsyncSession, plan: Plan, *, today: date, group_id: int | None = None) -> Summary:
    """The campaign's review figures: its posts' deliveries (sent, failed, late, skipped, by phase), its
    lotteries (entrants, winners), and check-ins and activity in its groups during its days (up to `today`)
    against the `BASELINE_DAYS` days before. With `group_id`, only that group's share."""
    from storage import push as push_store
    from storage.activity import MemberActivity
    from storage.checkin import Checkin
    from storage.lottery import Lottery, LotteryEntry, LotteryWinner

    cid = plan.id
    post_ids = select(push_store.PushPost.id).where(push_store.PushPost.campaign_id == cid)
    posts = (await session.execute(select(func.count()).select_from(post_ids.subquery()))).scalar_one()
    run_rows = (await session.execute(
        select(push_store.PushRun.status, func.count()).where(push_store.PushRun.post_id.in_(post_ids))  # type: ignore[attr-defined]
        .group_by(push_store.PushRun.status))).all()
    runs = sum(n for _, n in run_rows)
    runs_skipped = sum(n for s, n in run_rows if s == push_store.RUN_SKIPPED)

    deliveries = (select(push_store.PushPost.phase, push_store.PushDelivery.status, push_store.PushRun.late, func.count())
                  .join(push_store.PushRun, push_store.PushRun.post_id == push_store.PushPost.id)
                  .join(push_store.PushDelivery, push_store.PushDelivery.run_id == push_store.PushRun.id)
                  .where(push_store.PushPost.campaign_id == cid)
                  .group_by(push_store.PushPost.phase, push_store.PushDelivery.status, push_store.PushRun.late))
    if group_id is not None:
        deliveries = deliveries.where(push_store.PushDelivery.group_id == group_id)
    total = PostFigures()
    by_phase: dict[str, PostFigures] = {}
    for phase, status, late, count in (await session.execute(deliveries)).all():
        total.add(status, bool(late), int(count))
        by_phase.setdefault(phase or "", PostFigures()).add(status, bool(late), int(count))

    linked = (select(Lottery, Group.external_id).join(CampaignLottery, CampaignLottery.lottery_id == Lottery.id)
              .join(Group, Group.id == Lottery.group_id).where(CampaignLottery.campaign_id == cid)
              .order_by(Lottery.id))  # type: ignore[arg-type]
    if group_id is not None:
        linked = linked.where(Lottery.group_id == group_id)
    lotteries: list[LotteryFigures] = []
    lottery_ids: list[int] = []
    for lottery, group_ext in (await session.execute(linked)).all():
        entrants = (await session.execute(select(func.count()).select_from(LotteryEntry)
                                          .where(LotteryEntry.lottery_id == lottery.id))).scalar_one()
        winners = (await session.execute(select(func.count()).select_from(LotteryWinner).where(
            LotteryWinner.lottery_id == lottery.id, LotteryWinner.forfeited_at.is_(None)))).scalar_one()  # type: ignore[union-attr]
        lotteries.append(LotteryFigures(lottery.id, lottery.title, group_ext, lottery.status, int(entrants),
                                        int(winners)))
        lottery_ids.append(lottery.id)
    unique_entrants = 0
    if lottery_ids:
        unique_entrants = int((await session.execute(select(func.count(distinct(LotteryEntry.member_id)))
                                                     .where(LotteryEntry.lottery_id.in_(lottery_ids)))).scalar_one())  # type: ignore[attr-defined]

    if group_id is not None:
        group_ids: Any = select(Group.id).where(Group.id == group_id)
    else:
        group_ids = select(Group.id).where(*group_conditions(plan.campaign))
    groups = int((await session.execute(select(func.count()).select_from(group_ids.subquery()))).scalar_one())

    async def window(first: date, last: date) -> Window:
        checkins, members = (await session.execute(
            select(func.count(), func.count(distinct(Checkin.member_id)))
            .where(Checkin.group_id.in_(group_ids), Checkin.day >= first, Checkin.day <= last))).one()  # type: ignore[attr-defined]
        active, messages = (await session.execute(
            select(func.count(distinct(MemberActivity.member_id)), func.coalesce(func.sum(MemberActivity.messages), 0))
            .where(MemberActivity.group_id.in_(group_ids), MemberActivity.day >= first,  # type: ignore[attr-defined]
                   MemberActivity.day <= last))).one()
        return Window(first, last, int(checkins), int(members), int(active), int(messages))

    first, last = plan.span()
    during = await window(first, min(last, today)) if today >= first else None
    before = await window(first - timedelta(days=BASELINE_DAYS), first - timedelta(days=1))
    return Summary(plan, today, group_id, int(posts), runs, runs_skipped, total,
                   {p: by_phase[p] for p in (*PHASES, "") if p in by_phase}, lotteries, unique_entrants, groups,
                   during, before)


def change_text(now: float, before: float) -> str:
    """"+25%" / "-10%" / "n/a" (nothing before)."""
    if before <= 0:
        return "n/a"
    return f"{(now - before) / before * 100:+.0f}%"
