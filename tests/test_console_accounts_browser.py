"""The console's redraw and 账号管理 pages in a real browser (Debian's headless chromium via Playwright, SQLite and
PostgreSQL): redraw an unclaimed prize with a reason and see the new winner, the rounds and the proof verified
again; create a group admin with a typed password and groups, reset a password, disable and enable an account,
and see the last admin kept. Screenshots go to tests/artifacts/ (see tests/test_console_browser.py)."""

from __future__ import annotations

from storage import console as console_store
from tests.console_helpers import ConsoleClient, make_user, say, seed_simulator
from tests.test_console_browser import PHONE, browser, log_in, open_page, shot  # noqa: F401 - browser is a fixture
from tests.test_console_features_browser import accept_dialogs

NEW_PASSWORD = "typed by the admin 42"


async def test_redraw_an_unclaimed_prize_and_see_the_new_proof_verified(bot, browser, db_url):  # noqa: F811
    await seed_simulator(bot)
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    created = await say(bot, "抽奖 创建 周末福利 | 一等奖x1 | 明天 20:00 | 关键词 我要抽奖", "boss", "老板", role="owner")
    assert "已创建" in created[0]
    for user, name in (("u1", "小明"), ("u2", "小红"), ("u3", "小刚")):
        await say(bot, "我要抽奖", user, name)
    assert "开奖啦" in (await say(bot, "抽奖 开奖 1", "boss", "老板", role="owner"))[0]
    page = await open_page(browser)
    await log_in(page, bot, start="/console/lottery?lottery=1")
    await page.wait_for_selector("#verification[data-ok='1']")
    seed = await page.locator("[data-proof=seed]").inner_text()
    first = page.locator("#winners-table tbody tr[data-pick='0']")
    winner = await first.get_attribute("data-user")
    await first.locator("button.redraw-btn").click()
    form = page.locator("#redraw-form")
    assert await form.locator("input[name=reason]").input_value() == "未领奖"
    await form.locator("input[name=reason]").fill("三天未领奖")
    await page.screenshot(path=shot("console_lottery_redraw_form", db_url), full_page=True)
    await page.click("#redraw-confirm")
    await page.wait_for_selector("#lottery-flash")
    assert "新的中奖者是" in await page.locator("#lottery-flash").inner_text()
    assert await page.locator("#winners-table tbody tr").count() == 2
    forfeited = page.locator("#winners-table tbody tr[data-pick='0']")
    assert "已作废：三天未领奖" in await forfeited.inner_text()
    assert await forfeited.locator("button.redraw-btn").count() == 0
    replacement = page.locator("#winners-table tbody tr[data-pick='1']")
    assert "重抽，替换序号 0" in await replacement.inner_text()
    assert await replacement.get_attribute("data-user") != winner
    # The same seed, still verified; the rounds name who redrew and why.
    assert await page.locator("[data-proof=seed]").inner_text() == seed
    assert await page.locator("#verification").get_attribute("data-ok") == "1"
    assert "2 个中奖结果" in await page.locator("#verification").inner_text()
    rounds = await page.locator("#rounds-table tbody tr").all_inner_texts()
    assert len(rounds) == 2 and "console:ops" in rounds[1] and "三天未领奖" in rounds[1]
    await page.screenshot(path=shot("console_lottery_redrawn", db_url), full_page=True)
    _, transcript = await bot.get_json("/api/simulator/messages", group="g1", after=0)
    assert any("重抽" in m["text"] and "三天未领奖" in m["text"] for m in transcript["messages"] if m["from_bot"])
    assert page.errors == []  # type: ignore[attr-defined]


async def test_manage_console_accounts_in_the_browser(bot, browser, db_url):  # noqa: F811
    await seed_simulator(bot, "g1")
    await seed_simulator(bot, "g2")
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    page = await open_page(browser)
    accept_dialogs(page)
    await log_in(page, bot, start="/console/users")
    assert await page.locator("nav a[href='/console/users']").count() == 1
    form = page.locator("#user-form")
    await form.locator("input[name=username]").fill("zhang")
    await form.locator("select[name=role]").select_option("group_admin")
    assert await form.locator(".group-picker").is_visible()
    await form.locator(".group-picker label:has-text('演示群') input").first.check()
    # Too short, then two different passwords: said before anything is created.
    await form.locator("input[name=password]").fill("short1234")
    await form.locator("input[name=password_again]").fill("short1234")
    await page.click("#user-create")
    await page.wait_for_selector("#user-form .message.error")
    assert "密码太短：至少 10 个字符" in await page.locator("#user-form .message.error").inner_text()
    await form.locator("input[name=password]").fill(NEW_PASSWORD)
    await form.locator("input[name=password_again]").fill(NEW_PASSWORD + "!")
    await page.click("#user-create")
    await page.wait_for_function("() => document.querySelector('#user-form .message.error').textContent.includes('不一样')")
    await form.locator("input[name=password_again]").fill(NEW_PASSWORD)
    await page.click("#user-create")
    await page.wait_for_selector("#users-flash")
    row = page.locator("#users-table tbody tr[data-username='zhang']")
    assert "群管理员" in await row.inner_text() and "演示群" in await row.inner_text()
    await page.screenshot(path=shot("console_users", db_url), full_page=True)

    zhang = ConsoleClient(bot.url("/"))
    try:
        assert (await zhang.login("zhang", NEW_PASSWORD))[0] == 200
        await page.reload()
        await page.wait_for_selector("#root[data-ready='1'] #users-table")
        assert await row.locator("td.sessions").inner_text() == "1"
        # Reset the password: zhang is logged out and the new one works.
        await row.locator("button.user-password").click()
        await page.fill("#password-form input[name=password]", NEW_PASSWORD + " again")
        await page.fill("#password-form input[name=password_again]", NEW_PASSWORD + " again")
        await page.click("#password-save")
        await page.wait_for_selector("#users-flash:has-text('设置新密码')")
        assert await row.locator("td.sessions").inner_text() == "0"
        assert (await zhang.get("/console/api/me"))[0] == 401
        assert (await zhang.login("zhang", NEW_PASSWORD + " again"))[0] == 200
        # Disable (after a confirmation): logged out and refused; enable again.
        await row.locator("button.user-toggle").click()
        await page.wait_for_selector("#users-flash:has-text('已停用 zhang')")
        assert await row.locator("td .badge").inner_text() == "已停用"
        assert (await zhang.get("/console/api/me"))[0] == 401
        assert (await zhang.login("zhang", NEW_PASSWORD + " again"))[0] == 401
        await row.locator("button.user-toggle").click()
        await page.wait_for_selector("#users-flash:has-text('已启用 zhang')")
        assert await row.locator("td .badge").inner_text() == "启用"
    finally:
        await zhang.close()
    # The only admin cannot disable themselves: the refusal is shown and nothing changes.
    me = page.locator("#users-table tbody tr[data-username='ops']")
    await me.locator("button.user-toggle").click()
    await page.wait_for_selector("#root > .message.error")
    assert "最后一个启用的运营管理员" in await page.locator("#root > .message.error").inner_text()
    assert (await page.goto(bot.url("/console/audit"))).status == 200
    await page.wait_for_selector("#root[data-ready='1']")
    log = await page.locator("#root").inner_text()
    assert "console create-user" in log and "console disable-user" in log and NEW_PASSWORD not in log
    assert page.errors == []  # type: ignore[attr-defined]

    phone = await open_page(browser, PHONE)
    await log_in(phone, bot, start="/console/users")
    await phone.wait_for_selector("#users-table")
    await phone.screenshot(path=shot("console_users_phone", db_url), full_page=True)
