"""Scheduled posts, the pure part: schedules as people write them, fire times across timezones and DST, quiet
hours across midnight, content variables, payloads — and the config file's documented example post."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from bot.config import load_config
from bot.push_spec import (
    CRON,
    INTERVAL,
    ONCE,
    SpecError,
    check_content,
    check_payload,
    fire_after,
    fire_times,
    parse_quiet_hours,
    parse_schedule,
    quiet_until,
    render_content,
    split_schedule,
)

NOW = datetime(2030, 4, 30, 12, 0, tzinfo=UTC)  # a Tuesday, 20:00 in Shanghai
SH = "Asia/Shanghai"


def upcoming(text: str, tz: str = SH, count: int = 3, after: datetime = NOW) -> list[str]:
    schedule = parse_schedule(text, tz=tz, now=after)
    return [t.isoformat() for t in fire_times(schedule, tz, after, after, limit=count)]


@pytest.mark.parametrize(("text", "kind", "cron"), [
    ("0 9 * * *", CRON, "0 9 * * *"),
    ("每天 09:00", CRON, "0 9 * * *"),
    ("每天9点半", CRON, "30 9 * * *"),
    ("每日 7点", CRON, "0 7 * * *"),
    ("工作日 8:30", CRON, "30 8 * * mon-fri"),
    ("周末 10:00", CRON, "0 10 * * sat,sun"),
    ("每周一、三、五 7:00", CRON, "0 7 * * mon,wed,fri"),
    ("every 30m", INTERVAL, None),
    ("每2小时", INTERVAL, None),
    ("明天 9:00", ONCE, None),
    ("2030-05-01 09:00", ONCE, None),
])
def test_schedules_as_people_write_them(text, kind, cron):
    schedule = parse_schedule(text, tz=SH, now=NOW)
    assert schedule.kind == kind and schedule.cron == cron


def test_fire_times_in_the_posts_timezone():
    assert upcoming("0 9 * * *") == ["2030-05-01T01:00:00+00:00", "2030-05-02T01:00:00+00:00",
                                     "2030-05-03T01:00:00+00:00"]
    assert upcoming("每2小时") == ["2030-04-30T14:00:00+00:00", "2030-04-30T16:00:00+00:00",
                                 "2030-04-30T18:00:00+00:00"]
    assert upcoming("明天 9:00") == ["2030-05-01T01:00:00+00:00"]
    assert upcoming("05-01 09:00") == ["2030-05-01T01:00:00+00:00"]  # no year: the next one


def test_crontab_weekdays_count_from_sunday_like_cron_does():
    # APScheduler's own numbering starts at Monday; a crontab line means what cron means.
    days = [datetime.fromisoformat(t).strftime("%a") for t in upcoming("0 9 * * 1-5", tz="UTC", count=7)]
    assert days == ["Wed", "Thu", "Fri", "Mon", "Tue", "Wed", "Thu"]
    assert {datetime.fromisoformat(t).strftime("%a") for t in upcoming("0 9 * * 0,7", tz="UTC")} == {"Sun"}
    assert {datetime.fromisoformat(t).strftime("%a") for t in upcoming("0 9 * * */2", tz="UTC", count=8)} == {
        "Sun", "Tue", "Thu", "Sat"}


def test_local_time_is_kept_across_daylight_saving():
    ny = "America/New_York"  # DST starts 10 March 2030
    times = upcoming("0 9 * * *", tz=ny, count=4, after=datetime(2030, 3, 8, tzinfo=UTC))
    assert times == ["2030-03-08T14:00:00+00:00", "2030-03-09T14:00:00+00:00", "2030-03-10T13:00:00+00:00",
                     "2030-03-11T13:00:00+00:00"]


def test_fire_after_never_repeats_an_instant():
    schedule = parse_schedule("every 1m", tz=SH, now=NOW)
    first = fire_after(schedule, SH, NOW, NOW)
    assert first == NOW + timedelta(minutes=1)
    assert fire_after(schedule, SH, NOW, first) == NOW + timedelta(minutes=2)
    once = parse_schedule("明天 9:00", tz=SH, now=NOW)
    assert fire_after(once, SH, NOW, once.run_at) is None


@pytest.mark.parametrize(("text", "key"), [
    ("每天 25:00", "schedule"), ("61 9 * * *", "cron"), ("0 9 * * 8", "cron"), ("every 30s", "interval"),
    ("2020-01-01 09:00", "past"), ("今天 19:00", "past"), ("下周", "schedule"), ("", "schedule"),
])
def test_bad_schedules_say_what_is_wrong(text, key):
    with pytest.raises(SpecError) as exc:
        parse_schedule(text, tz=SH, now=NOW)
    assert exc.value.key == key


def test_a_schedule_and_its_content_are_split_as_typed():
    assert split_schedule("0 9 * * 1-5 早上好 各位", tz=SH, now=NOW)[1] == "早上好 各位"
    assert split_schedule("每天 9:00 早上好", tz=SH, now=NOW)[1] == "早上好"
    assert split_schedule("每天9:00 早上好", tz=SH, now=NOW)[1] == "早上好"
    assert split_schedule("明天 20:00 直播开始", tz=SH, now=NOW)[1] == "直播开始"
    with pytest.raises(SpecError) as exc:
        split_schedule("每天 9:00", tz=SH, now=NOW)
    assert exc.value.key == "content"
    with pytest.raises(SpecError) as exc:
        split_schedule("随便 说点 什么", tz=SH, now=NOW)
    assert exc.value.key == "schedule"


def test_quiet_hours_wrap_midnight_in_the_groups_timezone():
    window = parse_quiet_hours("22:00-08:00")
    assert window == (time(22), time(8))
    # 23:00 in Shanghai → the end is 08:00 next morning; 03:00 → 08:00 the same morning; 08:00 is not quiet.
    assert quiet_until(datetime(2030, 5, 1, 15, tzinfo=UTC), window, SH) == datetime(2030, 5, 2, 0, tzinfo=UTC)
    assert quiet_until(datetime(2030, 5, 1, 19, tzinfo=UTC), window, SH) == datetime(2030, 5, 2, 0, tzinfo=UTC)
    assert quiet_until(datetime(2030, 5, 2, 0, tzinfo=UTC), window, SH) is None
    assert quiet_until(datetime(2030, 5, 1, 13, 59, tzinfo=UTC), window, SH) is None
    daytime = parse_quiet_hours("12:00-13:30")
    assert quiet_until(datetime(2030, 5, 1, 4, 30, tzinfo=UTC), daytime, SH) == datetime(2030, 5, 1, 5, 30, tzinfo=UTC)
    assert parse_quiet_hours("") is None and parse_quiet_hours("关闭") is None
    for bad in ("night", "25:00-08:00", "08:00-08:00"):
        with pytest.raises(SpecError):
            parse_quiet_hours(bad)


def test_content_variables_are_checked_and_filled():
    dates = {"双十一": date(2030, 11, 11)}
    text = "{group_name}：{date}{weekday}，{member_count}人，昨天{yesterday_checkins}人签到，距双十一{days_until:双十一}天，" \
           "距元旦{days_until:2031-01-01}天 {{原样}}"
    check_content(text, dates)
    values = {"group_name": "读书会", "date": "5月1日", "weekday": "星期三", "member_count": 12, "yesterday_checkins": 3}
    assert render_content(text, values, date(2030, 5, 1), dates) == (
        "读书会：5月1日星期三，12人，昨天3人签到，距双十一194天，距元旦245天 {原样}")
    for bad, key in (("{name}", "variable"), ("{days_until}", "days_until"), ("{days_until:下周}", "days_until"),
                     ("{date:long}", "variable"), ("x" * 4001, "too_long")):
        with pytest.raises(SpecError) as exc:
            check_content(bad, dates)
        assert exc.value.key == key


def test_payloads_of_images_and_news_are_checked():
    assert check_payload("image", '{"url": "https://example.com/a.png"}') == {"url": "https://example.com/a.png"}
    assert check_payload("news", {"articles": [{"title": "周报", "url": "https://example.com"}]})
    assert check_payload("text", None) == {}
    for kind, payload in (("image", {}), ("news", {"articles": []}), ("news", {"articles": [{"title": "x"}]}),
                          ("text", {"url": "x"}), ("video", {}), ("image", "{not json")):
        with pytest.raises(SpecError):
            check_payload(kind, payload)


def test_the_example_post_in_config_example_toml_is_valid(tmp_path):
    text = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text(encoding="utf-8")
    block = text.split("\n[push]\n", 1)[1].split("\n[", 1)[0]
    lines = [re.sub(r"\s+# .*$", "", line[4:]) for line in block.splitlines() if line.startswith("#   ")
             and not line.startswith("#    ")]
    post = tomllib.loads("\n".join(lines))
    assert post["name"] == "morning" and "{days_until:双十一}" in post["content"]
    config = tmp_path / "config.toml"
    config.write_text('[push]\ndates = {"双十一" = 2026-11-11}\n[[push.posts]]\n' + "\n".join(lines), encoding="utf-8")
    loaded = load_config(config, environ={})
    [declared] = loaded.push.posts
    assert (declared.name, declared.schedule, declared.groups) == ("morning", "0 9 * * 1-5", ["simulator:g1", "robot:ops"])
