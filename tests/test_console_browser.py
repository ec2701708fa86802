"""The console in a real browser: Debian's headless chromium driven by Playwright, against a bot on a real
socket (SQLite and PostgreSQL). Log in, see the dashboard's charts drawn from activity seeded through the
simulator, change a group's welcome text and see the simulator use it, the empty state, logout.

Chromium comes from Debian (scripts/chromium.sh, run by ./test.sh; `playwright install` is never used).
Without it these tests skip, except under CI, where they fail. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from storage import console as console_store
from storage.audit import AuditEntry
from tests.console_helpers import PASSWORD, make_user, seed_simulator

ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
BROWSER_ZONE = "America/New_York"  # never the bot's: times must not follow the browser's clock


def chromium_path() -> str:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
async def browser():
    problem = None
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    path = chromium_path()
    if problem is None and not os.path.exists(path):  # noqa: ASYNC240 - once per test, before any I/O
        problem = f"chromium not found at {path} (scripts/chromium.sh installs Debian's; or set CHROMIUM_PATH)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need chromium in CI: {problem}")
        pytest.skip(problem)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        # --no-sandbox: the tests may run as root (CI), where chromium's sandbox refuses to start.
        browser = await playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        await browser.close()


async def open_page(browser, viewport=DESKTOP, timezone_id: str | None = None):
    """A page in a new browser context; `timezone_id` puts the browser in another timezone than the bot's."""
    context = await browser.new_context(viewport=viewport, locale="zh-CN", timezone_id=timezone_id)
    page = await context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))  # type: ignore[attr-defined]
    return page


async def log_in(page, bot, username: str = "ops", start: str = "/console") -> None:
    await page.goto(bot.url(start))
    assert "/console/login" in page.url  # not logged in yet: sent to the login page
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_selector("#root[data-ready='1']")


def shot(name: str, db_url: str) -> str:
    return str(ARTIFACTS / f"{name}_{'pg' if db_url.startswith('postgres') else 'sqlite'}.png")


async def test_log_in_and_see_the_dashboard_charts_drawn_with_data(bot, browser, db_url):
    await seed_simulator(bot)
    await seed_simulator(bot, "g2")
    await bot.post_json("/api/simulator/messages", {"group": "g1", "user": "boss", "name": "老板", "role": "owner",
                                                    "text": "问答 添加 怎么开发票？ | 在订单页点「申请开票」"})
    await bot.post_json("/api/simulator/messages", {"group": "g1", "user": "u1", "name": "小明", "text": "怎么开发票？"})
    await bot.post_json("/api/simulator/leaves", {"group": "g2", "users": ["u2"]})
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)

    page = await open_page(browser)
    await log_in(page, bot)
    assert page.url.rstrip("/").endswith("/console")
    for chart in ("chart-active", "chart-joins", "chart-checkins", "chart-faq"):
        svg = page.locator(f"#{chart} svg.chart")
        assert int(await svg.get_attribute("data-max")) >= 1, chart
        assert int(await svg.get_attribute("data-points")) >= 30, chart
    # The active-members line rises to today's 4 members; the bars have height where there is data.
    path = await page.locator("#chart-active path.series").get_attribute("d")
    assert path.count("L") == 29
    assert await page.locator("#chart-active svg").get_attribute("data-max") == "4"
    tall = await page.eval_on_selector_all("#chart-joins rect.bar", "rs => rs.filter(r => +r.getAttribute('height') > 0).length")
    assert tall == 2  # today's joins and leaves
    assert "4" == (await page.locator("[data-kpi=kpi_active] .kpi-value").inner_text())
    assert "1 / 2" == (await page.locator("[data-kpi=kpi_faq] .kpi-value").inner_text())
    title = await page.locator("#chart-checkins rect.bar").last.locator("title").text_content()
    assert title.endswith("签到：4")
    await page.screenshot(path=shot("console_dashboard", db_url), full_page=True)

    # One group's figures.
    await page.select_option("#scope-select", label="演示群")
    await page.wait_for_function("() => location.search.includes('group=')")
    await page.wait_for_selector("#root[data-ready='1'] #chart-active svg")
    await page.wait_for_function("() => document.querySelector('[data-kpi=kpi_groups] .kpi-value').textContent === '1'")
    assert await page.locator("[data-kpi=kpi_members] .kpi-value").inner_text() == "4"  # 3 joined, 1 spoke
    assert page.errors == []  # type: ignore[attr-defined]

    phone = await open_page(browser, PHONE)
    await log_in(phone, bot)
    assert await phone.locator("#nav").is_hidden()  # the menu folds away on a phone
    await phone.click("#menu-toggle")
    assert await phone.locator("#nav").is_visible()
    await phone.screenshot(path=shot("console_dashboard_phone", db_url), full_page=True)


async def test_change_a_welcome_text_in_the_console_and_see_it_in_the_simulator(bot, browser, db_url):
    await seed_simulator(bot)
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    # The browser is in New York; the bot's timezone is Asia/Shanghai (the default).
    page = await open_page(browser, timezone_id=BROWSER_ZONE)
    await log_in(page, bot, start="/console/groups")
    await page.click("#groups-table a.group-link:has-text('演示群')")
    await page.wait_for_selector("#settings-form")
    await page.fill("textarea[name=welcome_text]", "热烈欢迎 {names} 加入{group_name}，请先看群公告～")
    await page.click("#settings-save")
    await page.wait_for_selector("#settings-form .message.ok")
    assert await page.locator("#welcome-preview").inner_text() == "热烈欢迎 @小新 加入演示群，请先看群公告～"
    await page.screenshot(path=shot("console_group_settings", db_url), full_page=True)

    # The console links the simulator; a member joins there and gets the new welcome.
    assert await page.locator("#nav-simulator").get_attribute("href") == "/simulator"
    sim = await open_page(browser)
    await sim.goto(bot.url("/simulator"))
    await sim.fill("#newId", "u77")
    await sim.fill("#newName", "阿七")
    await sim.click("#addForm button[type=submit]")
    await sim.click("#memberList li.member:has-text('阿七') button.join")
    welcome = sim.locator(".msg.bot .bubble", has_text="热烈欢迎 @阿七 加入演示群")
    await welcome.wait_for(timeout=15000)
    await sim.screenshot(path=shot("simulator_new_welcome", db_url), full_page=True)

    # The change is in the audit log page, made by the console account.
    await page.goto(bot.url("/console/audit?source=console"))
    await page.wait_for_selector("#root[data-ready='1'] #audit-table")
    row = page.locator("#audit-table tbody tr", has_text="welcome set text")
    assert "ops" in await row.inner_text()
    # Its time is on the bot's clock, not the browser's, and the top bar says which clock that is.
    async with bot.runtime.db.read_session() as session:
        at = (await session.execute(select(AuditEntry.at).where(AuditEntry.command == "welcome set text"))).scalar_one()
    assert await page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone") == BROWSER_ZONE
    shown = await row.locator("td").first.inner_text()
    assert shown == at.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    assert shown != at.astimezone(ZoneInfo(BROWSER_ZONE)).strftime("%Y-%m-%d %H:%M")
    assert await page.locator("#console-zone").inner_text() == "时间按 Asia/Shanghai"
    assert page.errors == [] and sim.errors == []  # type: ignore[attr-defined]


async def test_a_new_console_shows_what_to_do_first_and_logs_out(bot, browser, db_url):
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    page = await open_page(browser)
    await log_in(page, bot)
    empty = page.locator("#empty-state")
    assert await empty.is_visible()
    text = await empty.inner_text()
    assert "模拟器" in text and "问答 添加" in text and "qunbot push add" in text
    assert await empty.locator("a[href='/simulator']").count() == 1
    await page.screenshot(path=shot("console_empty", db_url), full_page=True)
    await page.click("#logout")
    await page.wait_for_url("**/console/login")
    await page.goto(bot.url("/console/members"))
    assert "/console/login?next=" in page.url and page.url.endswith("console/members")


async def test_a_viewer_sees_the_settings_read_only(bot, browser, db_url):
    await seed_simulator(bot)
    await make_user(bot.runtime.db, "viewer", console_store.OPS_VIEWER)
    page = await open_page(browser)
    await log_in(page, bot, "viewer", start="/console/groups")
    await page.click("#groups-table a.group-link")
    await page.wait_for_selector("#settings-form")
    assert await page.locator("#settings-save").is_disabled()
    assert await page.locator("textarea[name=welcome_text]").is_disabled()
    await page.goto(bot.url("/console/members"))
    await page.wait_for_selector("#root[data-ready='1'] #members-table")
    await page.click("#members-table a.member-link:has-text('小刚')")
    await page.wait_for_selector("#stays-table")
    assert "小明" in await page.locator("#stays-table").inner_text()  # invited by 小明
    await page.screenshot(path=shot("console_member_profile", db_url), full_page=True)
