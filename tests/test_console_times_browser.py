"""Times in the console in a real browser (Debian's headless chromium via Playwright, SQLite and PostgreSQL) whose
own timezone is neither the bot's nor the post's: a scheduled post's runs are shown on the post's clock, named,
while the top bar names the bot's clock the rest of the console uses (tests/test_console_browser.py checks an
audit time in the bot's timezone). See tests/test_console_browser.py for the browser set-up."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from scheduler.push import service
from storage import console as console_store
from storage.db import utcnow
from storage.push import PushDelivery
from tests.conftest import make_config
from tests.console_helpers import group_id, logged_in, seed_simulator
from tests.test_console_browser import BROWSER_ZONE, browser, log_in, open_page, shot  # noqa: F401 - a fixture

TOKYO = ZoneInfo("Asia/Tokyo")


def next_nine_in_tokyo() -> datetime:
    local = utcnow().astimezone(TOKYO)
    at = local.replace(hour=9, minute=0, second=0, microsecond=0)
    return (at if at > local else at + timedelta(days=1)).astimezone(ZoneInfo("UTC"))


async def test_a_posts_runs_show_their_times_on_the_posts_clock_whatever_the_browsers(db_url, bot_factory,
                                                                                        browser):  # noqa: F811
    config = make_config(db_url, push={"quiet_hours": ""})
    assert config.timezone == "Asia/Shanghai"
    bot = await bot_factory(config)
    await seed_simulator(bot)
    client = await logged_in(bot, "ops", console_store.OPS_ADMIN)
    try:
        status, post, _ = await client.request("POST", "/console/api/push/posts", {
            "schedule": "每天 9:00", "timezone": "Asia/Tokyo", "target_kind": "groups",
            "group_ids": [await group_id(bot)], "kind": "text", "content": "早上好，{group_name}！"})
    finally:
        await client.close()
    assert status == 200, post
    push = service(bot.runtime)
    nine = next_nine_in_tokyo()
    assert len(await push.fire(post["id"], now=nine)) == 1
    await push.deliver_due(now=nine + timedelta(minutes=1, seconds=30))
    async with bot.runtime.db.read_session() as session:
        sent_at = (await session.execute(select(PushDelivery.sent_at))).scalar_one()
    assert sent_at is not None

    page = await open_page(browser, timezone_id=BROWSER_ZONE)
    await log_in(page, bot, start=f"/console/push?runs={post['id']}")
    await page.wait_for_selector("#root[data-ready='1'] section.run")
    assert await page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone") == BROWSER_ZONE
    heading = await page.locator("section.run h3").inner_text()
    assert heading.startswith(f"{nine.astimezone(TOKYO):%Y-%m-%d} 09:00（Asia/Tokyo）"), heading
    when = await page.locator("table.deliveries tbody tr[data-status=sent] td").nth(3).inner_text()
    assert when == f"{sent_at.astimezone(TOKYO):%Y-%m-%d %H:%M}（Asia/Tokyo）"
    assert await page.locator("#console-zone").inner_text() == "时间按 Asia/Shanghai"
    await page.screenshot(path=shot("console_push_runs_times", db_url), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
