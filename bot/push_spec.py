"""Scheduled posts, the pure part: schedules, quiet hours, content variables and payloads, as people write them.

Nothing here touches the database or the network, so the chat command, the CLI, the config file and the
scheduler all parse and compute the same way (and tests can check it without a bot).

Schedules (one string, in the post's timezone):
- cron, five fields: ``0 9 * * *``, ``30 8 * * 1-5``;
- a fixed interval: ``every 30m``, ``2h``, ``1d``, ``每30分钟``, ``每2小时`` (at least one minute);
- daily or weekly: ``每天 09:00``, ``每天9点半``, ``工作日 8:30``, ``每周一 10:00`` (stored as cron);
- once: ``2026-05-01 09:00``, ``05-01 09:00``, ``明天 9:00``, ``今天 21:30``.

Content variables: {date} {weekday} {group_name} {member_count} {yesterday_checkins} {days_until:2026-11-11}
or {days_until:NAME} for a date named in ``push.dates``; ``{{`` and ``}}`` are literal braces. A campaign's
posts also have {campaign} {phase} {days_left} and {days_until:NAME} for the campaign's own dates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CRON, INTERVAL, ONCE = "cron", "interval", "once"
KINDS = ("text", "markdown", "image", "news")
VARIABLES = ("date", "weekday", "group_name", "member_count", "yesterday_checkins", "days_until")
# Only in a campaign's posts (storage.campaign): its title, the phase, days left until its key date.
CAMPAIGN_VARIABLES = ("campaign", "phase", "days_left")
MIN_INTERVAL_SECONDS = 60
MAX_CONTENT = 4000
MAX_ARTICLES = 8


class SpecError(ValueError):
    """A mistake in a post's definition. `key` names its chat text (push.err_<key>); str() is English."""

    def __init__(self, key: str, message: str, **values: object) -> None:
        super().__init__(message)
        self.key = key
        self.values = values


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule. `run_at` (once) is aware, in UTC."""

    kind: str
    cron: str | None = None
    interval_seconds: int | None = None
    run_at: datetime | None = None

    def describe(self, tz: str) -> str:
        """The schedule as it is stored and listed: the cron line, "every N s", or the local date-time."""
        if self.kind == CRON:
            return f"cron {self.cron}"
        if self.kind == INTERVAL:
            return f"every {_duration(self.interval_seconds or 0)}"
        assert self.run_at is not None
        return "once " + self.run_at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def check_timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError("timezone", f"unknown timezone {tz!r}", tz=tz) from None
    return tz


# -- schedules -------------------------------------------------------------------------------------------

_CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z?]+$")
_CRON_NUMERIC = re.compile(r"^[\d*/,\-?]+$")
_INTERVAL = re.compile(r"^(?:every\s*|每\s*)?(\d+)\s*(s|sec|秒|m|min|分钟|分|h|小时|个小时|d|天)$", re.IGNORECASE)
_UNIT = {"s": 1, "sec": 1, "秒": 1, "m": 60, "min": 60, "分钟": 60, "分": 60, "h": 3600, "小时": 3600,
         "个小时": 3600, "d": 86400, "天": 86400}
_CLOCK = r"(\d{1,2})(?:[:：](\d{2})|点(?:(\d{1,2})分?|半)?)"
_DAILY = re.compile(rf"^(每天|每日|工作日|周末|每周([一二三四五六日天1-7](?:[、,，][一二三四五六日天1-7])*))\s*{_CLOCK}$")
_DAY_WORD = re.compile(rf"^(今天|明天|后天)\s*{_CLOCK}$")
_ABSOLUTE = re.compile(r"^(?:(\d{4})[-/.年])?(\d{1,2})[-/.月](\d{1,2})日?\s*(\d{1,2})[:：](\d{2})$")
_WEEKDAY = {"一": "mon", "二": "tue", "三": "wed", "四": "thu", "五": "fri", "六": "sat", "日": "sun", "天": "sun",
            "1": "mon", "2": "tue", "3": "wed", "4": "thu", "5": "fri", "6": "sat", "7": "sun"}


def _clock(match: re.Match[str], first: int) -> tuple[int, int]:
    hour = int(match.group(first))
    minute_text = match.group(first + 1) or match.group(first + 2)
    minute = 30 if match.group(0).endswith("半") else int(minute_text or 0)
    if hour > 23 or minute > 59:
        raise SpecError("schedule", f"no such time of day in {match.group(0)!r}", text=match.group(0))
    return hour, minute


def parse_schedule(text: str, *, tz: str, now: datetime, allow_past: bool = False) -> Schedule:
    """A schedule as typed (see the module's docstring); SpecError says what is wrong. A one-time post must
    be in the future unless `allow_past` (a config file stays valid after its one-time post went out)."""
    value = " ".join(text.replace("\u3000", " ").split())
    if not value:
        raise SpecError("schedule", "the schedule is empty", text=value)
    zone = ZoneInfo(check_timezone(tz))
    fields = value.split(" ")
    if (len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields)
            and all(_CRON_NUMERIC.match(f) for f in fields[:3])):
        try:
            cron_trigger(value, zone)
        except ValueError as exc:
            raise SpecError("cron", f"invalid cron expression {value!r}: {exc}", text=value) from None
        return Schedule(CRON, cron=value)
    if found := _INTERVAL.match(value):
        seconds = int(found.group(1)) * _UNIT[found.group(2).lower()]
        if seconds < MIN_INTERVAL_SECONDS:
            raise SpecError("interval", f"an interval must be at least {MIN_INTERVAL_SECONDS} seconds", text=value)
        return Schedule(INTERVAL, interval_seconds=seconds)
    if found := _DAILY.match(value):
        hour, minute = _clock(found, 3)
        word = found.group(1)
        if word in ("每天", "每日"):
            days = "*"
        elif word == "工作日":
            days = "mon-fri"
        elif word == "周末":
            days = "sat,sun"
        else:
            days = ",".join(dict.fromkeys(_WEEKDAY[d] for d in re.split(r"[、,，]", found.group(2))))
        return Schedule(CRON, cron=f"{minute} {hour} * * {days}")
    local_now = now.astimezone(zone)
    day: date | None = None
    hour = minute = 0
    if found := _DAY_WORD.match(value):
        day = local_now.date() + timedelta(days=("今天", "明天", "后天").index(found.group(1)))
        hour, minute = _clock(found, 2)
    elif found := _ABSOLUTE.match(value):
        year = int(found.group(1)) if found.group(1) else local_now.year
        try:
            day = date(year, int(found.group(2)), int(found.group(3)))
        except ValueError:
            raise SpecError("schedule", f"no such date in {value!r}", text=value) from None
        hour, minute = int(found.group(4)), int(found.group(5))
        if hour > 23 or minute > 59:
            raise SpecError("schedule", f"no such time of day in {value!r}", text=value)
        if not found.group(1) and datetime.combine(day, time(hour, minute), zone) <= local_now:
            day = day.replace(year=day.year + 1)  # "05-01 09:00" already past this year: next year's
    if day is None:
        raise SpecError("schedule", f"cannot read the schedule {value!r}", text=value)
    run_at = datetime.combine(day, time(hour, minute), zone).astimezone(ZoneInfo("UTC"))
    if run_at <= now and not allow_past:
        raise SpecError("past", f"{value} is in the past", text=value)
    return Schedule(ONCE, run_at=run_at)


def split_schedule(args: str, *, tz: str, now: datetime) -> tuple[Schedule, str]:
    """`<schedule> <content>` as typed after 定时 添加: the longest leading words that read as a schedule
    (five for cron, two for "每天 9:00" or a date, one for "每2小时"), and the rest as the content."""
    words = args.split(" ")
    if len(words) <= 5:
        try:
            parse_schedule(args, tz=tz, now=now)
        except SpecError:
            pass
        else:
            raise SpecError("content", "the content is missing after the schedule")
    first_error: SpecError | None = None
    for size in (5, 2, 1):
        if len(words) <= size:
            continue
        try:
            return parse_schedule(" ".join(words[:size]), tz=tz, now=now), " ".join(words[size:]).strip()
        except SpecError as exc:
            if exc.key != "schedule":  # it was a schedule, only a wrong one (past, too short, bad cron)
                raise
            first_error = first_error or exc
    raise first_error or SpecError("schedule", f"cannot read a schedule in {args!r}", text=args)


def schedule_from_columns(kind: str, cron: str | None, interval_seconds: int | None,
                          run_at: datetime | None) -> Schedule:
    return Schedule(kind, cron=cron, interval_seconds=interval_seconds, run_at=run_at)


_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _standard_day_of_week(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday, 1 = Monday) as APScheduler reads it (where 0 is Monday):
    numbers become day names; names and * pass through."""
    if field in ("*", "?") or any(c.isalpha() for c in field):
        return "*" if field == "?" else field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span in ("*", ""):
            first, last = 0, 6
        elif "-" in span:
            a, b = span.split("-", 1)
            first, last = int(a), int(b)
        else:
            first = last = int(span)
            if step_text:
                last = 6
        if not (0 <= first <= 7 and 0 <= last <= 7 and first <= last and step >= 1):
            raise ValueError(f"day of week {part!r} must be within 0-7")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DOW_NAMES[d] for d in sorted(days))


def cron_trigger(expr: str, zone: ZoneInfo) -> Any:
    """An APScheduler CronTrigger for a standard five-field crontab line (minute hour day month weekday)."""
    from apscheduler.triggers.cron import CronTrigger

    minute, hour, day, month, weekday = expr.split()
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_standard_day_of_week(weekday),
                       timezone=zone)


def build_trigger(schedule: Schedule, tz: str, anchor: datetime) -> Any:
    """The APScheduler trigger that fires the schedule in `tz`; `anchor` starts a fixed interval."""
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    zone = ZoneInfo(tz)
    if schedule.kind == CRON:
        assert schedule.cron is not None
        return cron_trigger(schedule.cron, zone)
    if schedule.kind == INTERVAL:
        return IntervalTrigger(seconds=schedule.interval_seconds or MIN_INTERVAL_SECONDS, start_date=anchor,
                               timezone=zone)
    assert schedule.run_at is not None
    return DateTrigger(run_date=schedule.run_at, timezone=zone)


def fire_after(schedule: Schedule, tz: str, anchor: datetime, after: datetime) -> datetime | None:
    """The first time the schedule fires strictly after `after` (aware, in UTC), or None if never again."""
    if schedule.kind == ONCE:
        assert schedule.run_at is not None
        return schedule.run_at if schedule.run_at > after else None
    trigger = build_trigger(schedule, tz, anchor)
    found = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    if found is None:
        return None
    found = found.astimezone(ZoneInfo("UTC"))
    if found <= after:  # interval triggers work in float seconds; never return the same instant again
        return fire_after(schedule, tz, anchor, after + timedelta(milliseconds=1))
    return found


def fire_times(schedule: Schedule, tz: str, anchor: datetime, after: datetime, until: datetime | None = None,
               limit: int = 1000) -> Iterator[datetime]:
    """The times the schedule fires in (after, until], at most `limit` of them, oldest first."""
    cursor = after
    for _ in range(limit):
        nxt = fire_after(schedule, tz, anchor, cursor)
        if nxt is None or (until is not None and nxt > until):
            return
        yield nxt
        cursor = nxt


# -- quiet hours -----------------------------------------------------------------------------------------

_QUIET = re.compile(r"^(\d{1,2})[:：](\d{2})\s*[-~–至到]\s*(\d{1,2})[:：](\d{2})$")
OFF_WORDS = {"off", "none", "关闭", "关", "无", "不限"}


def parse_quiet_hours(text: str) -> tuple[time, time] | None:
    """`22:00-08:00` (may wrap midnight); "" or off/关闭 means none."""
    value = text.strip().lower()
    if not value or value in OFF_WORDS:
        return None
    found = _QUIET.match(value)
    if found is None:
        raise SpecError("quiet", f"quiet hours must look like 22:00-08:00, got {text!r}", text=text)
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or (h1, m1) == (h2, m2):
        raise SpecError("quiet", f"quiet hours must look like 22:00-08:00, got {text!r}", text=text)
    return time(h1, m1), time(h2, m2)


def format_quiet_hours(window: tuple[time, time] | None) -> str:
    if window is None:
        return ""
    return f"{window[0].strftime('%H:%M')}-{window[1].strftime('%H:%M')}"


def quiet_until(at: datetime, window: tuple[time, time] | None, tz: str) -> datetime | None:
    """If `at` falls in the quiet window (local time in `tz`), when the window ends (aware); else None."""
    if window is None:
        return None
    zone = ZoneInfo(tz)
    local = at.astimezone(zone)
    start, end = window
    now = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= now < end
        end_day = local.date()
    else:  # wraps midnight: 22:00-08:00
        inside = now >= start or now < end
        end_day = local.date() + timedelta(days=1) if now >= start else local.date()
    if not inside:
        return None
    # fold/DST: combine in the zone and normalise through UTC
    return datetime.combine(end_day, end, zone).astimezone(ZoneInfo("UTC"))


# -- content ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\{\{|\}\}|\{(\w+)(?::([^{}]*))?\}")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _target_date(arg: str, named_dates: Mapping[str, date]) -> date | None:
    arg = arg.strip()
    if arg in named_dates:
        return named_dates[arg]
    if _ISO_DATE.match(arg):
        try:
            return date.fromisoformat(arg)
        except ValueError:
            return None
    return None


def check_content(text: str, named_dates: Mapping[str, date], *, campaign: bool = False) -> None:
    """Every {variable} in the content is known, and every {days_until:…} names a date. `campaign`: a
    campaign's post (its variables too; `named_dates` then holds the campaign's dates)."""
    if len(text) > MAX_CONTENT:
        raise SpecError("too_long", f"the content is longer than {MAX_CONTENT} characters", max=MAX_CONTENT)
    known = VARIABLES + CAMPAIGN_VARIABLES if campaign else VARIABLES
    for found in _TOKEN.finditer(text):
        name, arg = found.group(1), found.group(2)
        if name is None:
            continue
        if name not in known:
            raise SpecError("variable", f"unknown variable {{{name}}}; known: "
                            + ", ".join(f"{{{v}}}" for v in known), name=name,
                            known="、".join(f"{{{v}}}" for v in known))
        if name == "days_until" and (arg is None or _target_date(arg, named_dates) is None):
            raise SpecError("days_until", f"{{days_until:…}} needs a date like 2026-11-11 or a name in "
                            f"push.dates{' or of the campaign' if campaign else ''}, got {arg!r}", arg=arg or "")
        if name != "days_until" and arg is not None:
            raise SpecError("variable", f"{{{name}}} takes no argument", name=f"{name}:{arg}",
                            known="、".join(f"{{{v}}}" for v in known))


def render_content(text: str, values: Mapping[str, object], today: date, named_dates: Mapping[str, date]) -> str:
    """Fill the variables; anything unknown stays as written (an operator sees the typo). A value given as
    "days_until:NAME" (a campaign's date, counted in the campaign's timezone) wins over `named_dates`."""

    def fill(found: re.Match[str]) -> str:
        whole, name, arg = found.group(0), found.group(1), found.group(2)
        if whole == "{{":
            return "{"
        if whole == "}}":
            return "}"
        if name == "days_until" and arg is not None:
            if f"days_until:{arg.strip()}" in values:
                return str(values[f"days_until:{arg.strip()}"])
            target = _target_date(arg, named_dates)
            return whole if target is None else str((target - today).days)
        if arg is None and name in values:
            return str(values[name])
        return whole

    return _TOKEN.sub(fill, text)


def uses(text: str, variable: str) -> bool:
    return any(found.group(1) == variable for found in _TOKEN.finditer(text))


def check_payload(kind: str, payload: Any) -> dict[str, Any]:
    """The JSON payload of an image or news post, checked; {} for text and markdown."""
    if kind not in KINDS:
        raise SpecError("kind", f"kind must be one of {', '.join(KINDS)}, got {kind!r}", kind=kind)
    if isinstance(payload, str):
        try:
            payload = json.loads(payload) if payload.strip() else {}
        except json.JSONDecodeError as exc:
            raise SpecError("payload", f"the payload is not JSON: {exc.msg}", problem=exc.msg) from None
    payload = payload or {}
    if not isinstance(payload, dict):
        raise SpecError("payload", "the payload must be a JSON object", problem="not an object")
    if kind in ("text", "markdown"):
        if payload:
            raise SpecError("payload", f"a {kind} post takes no payload", problem=f"{kind} has no payload")
        return {}
    if kind == "image":
        if not (isinstance(payload.get("url"), str) and payload["url"]) and not (
                isinstance(payload.get("base64"), str) and isinstance(payload.get("md5"), str)):
            raise SpecError("payload", 'an image needs {"url": …} or {"base64": …, "md5": …}',
                            problem="image needs url, or base64 and md5")
        return payload
    articles = payload.get("articles")
    if not isinstance(articles, list) or not 1 <= len(articles) <= MAX_ARTICLES:
        raise SpecError("payload", f'news needs {{"articles": [...]}} with 1 to {MAX_ARTICLES} articles',
                        problem=f"news needs 1 to {MAX_ARTICLES} articles")
    for article in articles:
        if not isinstance(article, dict) or not all(isinstance(article.get(k), str) and article[k]
                                                    for k in ("title", "url")):
            raise SpecError("payload", "each news article needs a title and a url",
                            problem="each article needs title and url")
    return payload


# -- group references ------------------------------------------------------------------------------------


def parse_group_ref(text: str, default_channel: str) -> tuple[str, str]:
    """"channel:group" or a bare group id on the default channel."""
    value = text.strip()
    channel, sep, group = value.partition(":")
    if sep and channel and group and re.fullmatch(r"[a-z_]{2,32}", channel):
        return channel, group
    if not value:
        raise SpecError("group", "empty group reference", text=text)
    return default_channel, value


NowFn = Callable[[], datetime]
