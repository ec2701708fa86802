"""The console's feature pages in a real browser (Debian's headless chromium via Playwright, SQLite and
PostgreSQL): create a scheduled post with the live preview and see its next runs; turn an unanswered question
into an FAQ entry in the console and get it answered in the simulator page; import FAQ entries from a CSV file
after a dry run that names the bad line; create and draw a lottery and see its proof verified. Screenshots go
to tests/artifacts/ (see tests/test_console_browser.py for the browser set-up)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from zoneinfo import ZoneInfo

from storage import console as console_store
from storage.db import utcnow
from tests.console_helpers import make_user, say, seed_campaign, seed_simulator
from tests.test_console_browser import PHONE, browser, log_in, open_page, shot  # noqa: F401 - browser is a fixture

SHANGHAI = ZoneInfo("Asia/Shanghai")


def accept_dialogs(page) -> None:
    page.on("dialog", lambda dialog: asyncio.create_task(dialog.accept()))


async def test_create_a_scheduled_post_with_the_live_preview_and_see_its_next_runs(bot, browser, db_url):  # noqa: F811
    await seed_simulator(bot)
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    page = await open_page(browser)
    await log_in(page, bot, start="/console/push")
    await page.click("#push-new")
    await page.wait_for_selector("#push-form")
    # As the schedule is typed, the preview follows (debounced): a wrong time is named under its field.
    await page.fill("input[name=schedule]", "每天 25:00")
    await page.wait_for_function("() => document.querySelector('[data-error-for=schedule]').textContent.includes('25:00')")
    await page.fill("input[name=timezone]", "Asia/Shanghai")
    await page.fill("input[name=schedule]", "每天 9:00")
    await page.check("#push-groups label:has-text('演示群') input")
    await page.fill("textarea[name=content]", "早上好，{group_name}！今天是{date} {weekday}")
    await page.wait_for_function("() => document.querySelectorAll('#preview-runs li[data-at]').length === 5")
    runs = await page.locator("#preview-runs li").all_inner_texts()
    assert all(" 09:00 " in r for r in runs), runs
    local = (utcnow() + timedelta(days=0)).astimezone(SHANGHAI)
    first = local.date() if local.hour < 9 else local.date() + timedelta(days=1)
    assert runs[0].startswith(first.isoformat())
    await page.wait_for_function("() => document.querySelector('#preview-content').textContent.startsWith('早上好，演示群！')")
    assert f"{first.year}年{first.month}月{first.day}日" in await page.locator("#preview-content").inner_text()
    assert await page.locator("[data-error-for=schedule]").inner_text() == ""
    await page.screenshot(path=shot("console_push_editor", db_url), full_page=True)

    await page.click("#push-save")
    await page.wait_for_selector("#push-table tbody tr[data-post-id]")
    row = page.locator("#push-table tbody tr[data-post-id]")
    assert await row.count() == 1
    assert (await row.locator("td.next-run").inner_text()).startswith(f"{first.isoformat()} 09:00")
    assert "运行中" in await row.inner_text() and "演示群" in await row.inner_text()
    await page.screenshot(path=shot("console_push_list", db_url), full_page=True)

    # Edit it to weekdays at 8:30: the preview and, after saving, the list show the new times.
    await row.locator("a.post-edit").click()
    await page.wait_for_selector("#push-form")
    await page.fill("input[name=schedule]", "工作日 8:30")
    await page.wait_for_function("() => [...document.querySelectorAll('#preview-runs li[data-at]')]"
                                 ".every(li => li.textContent.includes(' 08:30 '))")
    weekdays = await page.locator("#preview-runs li").all_inner_texts()
    assert not any(day in text for text in weekdays for day in ("星期六", "星期日"))
    await page.click("#push-save")
    await page.wait_for_selector("#push-table tbody tr[data-post-id] td.next-run")
    assert " 08:30" in await page.locator("#push-table td.next-run").inner_text()
    await page.click("#push-table button.post-pause")
    await page.wait_for_function("() => document.querySelector('#push-table td.next-run').textContent === '—'")
    await page.click("#push-table a.post-runs")
    await page.wait_for_selector("#runs-summary")
    assert await page.locator("#no-runs").is_visible()
    # The group's quiet hours and daily cap, in its settings page.
    await page.goto(bot.url("/console/groups"))
    await page.click("#groups-table a.group-link:has-text('演示群')")
    await page.wait_for_selector("#push-limits-form")
    await page.fill("#push-limits-form input[name=quiet_hours]", "23:00-07:30")
    await page.fill("#push-limits-form input[name=daily_cap]", "3")
    await page.click("#push-limits-save")
    await page.wait_for_selector("#push-limits-form .message.ok")
    assert "免打扰 23:00-07:30；每天最多 3 条" in await page.locator("#push-effective").inner_text()
    await page.screenshot(path=shot("console_group_push_limits", db_url), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]

    phone = await open_page(browser, PHONE)
    await log_in(phone, bot, start="/console/push?new=1")
    await phone.wait_for_selector("#push-preview")
    await phone.screenshot(path=shot("console_push_editor_phone", db_url), full_page=True)


async def test_make_an_unanswered_question_an_faq_and_get_it_answered_in_the_simulator(bot, browser, db_url):  # noqa: F811
    await seed_simulator(bot)  # 小刚 asked 发票怎么开呢？ and got no answer
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    page = await open_page(browser)
    accept_dialogs(page)
    await log_in(page, bot, start="/console/faq")
    cluster = page.locator("#unanswered-table tbody tr", has_text="发票怎么开呢？")
    assert "1" in await cluster.inner_text()
    await cluster.locator("button.make-faq").click()
    assert await page.input_value("#faq-form input[name=question]") == "发票怎么开呢？"
    assert await page.locator("#faq-from").is_visible()
    await page.select_option("#faq-form select[name=scope]", label="演示群")
    await page.fill("#faq-form textarea[name=answer]", "在订单页点「申请开票」，填写抬头即可")
    await page.fill("#faq-form input[name=aliases]", "开发票 | 要发票")
    await page.click("#faq-save")
    await page.wait_for_selector("#root[data-ready='1'] .message.ok")
    entry = page.locator("#faq-table tbody tr", has_text="发票怎么开呢？")
    assert "开发票、要发票" in await entry.inner_text() and "演示群" in await entry.inner_text()
    assert await page.locator("#unanswered-table tbody tr", has_text="发票怎么开呢？").count() == 0
    await page.screenshot(path=shot("console_faq", db_url), full_page=True)

    # A member asks in the simulator page and gets the new answer.
    sim = await open_page(browser)
    await sim.goto(bot.url("/simulator"))
    await sim.click("#memberList li.member:has-text('小红')")
    await sim.fill("#input", "请问怎么开发票？")
    await sim.click("#sendBtn")
    await sim.locator(".msg.bot .bubble", has_text="申请开票").wait_for(timeout=15000)
    await sim.screenshot(path=shot("simulator_faq_answer", db_url), full_page=True)

    # Import from a CSV file: the dry run names the bad line and imports nothing; a good file goes in.
    bad = "question,answer,aliases\n怎么退货？,订单页申请售后,退货\n几点发货？,\n".encode()
    await page.set_input_files("#faq-import input[type=file]", files=[
        {"name": "faq.csv", "mimeType": "text/csv", "buffer": bad}])
    await page.click("#import-preview")
    await page.wait_for_selector("#import-problems")
    assert "第 3 行：答案为空" in await page.locator("#import-problems").inner_text()
    assert await page.locator("#import-apply").is_disabled()
    good = "\ufeffquestion,answer,aliases\n怎么退货？,订单页申请售后,退货\n几点发货？,下午四点前当天发,\n".encode()
    await page.set_input_files("#faq-import input[type=file]", files=[
        {"name": "faq.csv", "mimeType": "text/csv", "buffer": good}])
    await page.click("#import-preview")
    await page.wait_for_selector("#import-steps")
    assert "将新增 2 条" in await page.locator("#faq-import .import-summary").inner_text()
    await page.screenshot(path=shot("console_faq_import_preview", db_url), full_page=True)
    await page.click("#import-apply")
    await page.wait_for_selector("#faq-table tbody tr:has-text('几点发货？')")
    assert await page.locator("#faq-table tbody tr[data-entry-id]").count() == 3
    assert page.errors == [] and sim.errors == []  # type: ignore[attr-defined]


async def test_create_and_draw_a_lottery_and_see_its_proof_verified(bot, browser, db_url):  # noqa: F811
    await seed_simulator(bot)
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    page = await open_page(browser)
    accept_dialogs(page)
    await log_in(page, bot, start="/console/lottery")
    form = page.locator("#lottery-form")
    await form.locator("select[name=group_id]").select_option(label="演示群")
    await form.locator("input[name=title]").fill("周末福利")
    await form.locator(".prize-row input[name=prize_name]").first.fill("一等奖")
    await page.click("#add-prize")
    await form.locator(".prize-row input[name=prize_name]").last.fill("二等奖")
    await form.locator(".prize-row input[name=prize_stock]").last.fill("2")
    await form.locator("input[name=deadline]").fill("明天 20:00")
    await form.locator("input[name=keyword]").fill("我要抽奖")
    await page.click("#lottery-create")
    await page.wait_for_selector("#lottery-title")
    assert "进行中" in await page.locator("#lottery-title").inner_text()
    commitment = await page.locator("[data-proof=commitment]").inner_text()
    assert len(commitment) == 64
    assert await page.locator("[data-proof=seed]").inner_text() == "开奖前保密"
    for user, name in (("u1", "小明"), ("u2", "小红"), ("u3", "小刚")):
        assert "已参加「周末福利」" in (await say(bot, "我要抽奖", user, name))[0]
    await page.reload()
    await page.wait_for_selector("#root[data-ready='1'] #entrants-table")
    assert await page.locator("#entrants-table tbody tr").count() == 3
    await page.click("#draw-btn")
    await page.wait_for_selector("#verification[data-ok='1']")
    assert "验证通过" in await page.locator("#verification").inner_text()
    assert "已开奖" in await page.locator("#lottery-title").inner_text()
    seed = await page.locator("[data-proof=seed]").inner_text()
    assert len(seed) == 64 and await page.locator("[data-proof=commitment]").inner_text() == commitment
    assert len(await page.locator("[data-proof=entrants_hash]").inner_text()) == 64
    assert await page.locator("#winners-table tbody tr").count() == 3
    await page.screenshot(path=shot("console_lottery_proof", db_url), full_page=True)
    # The announcement with the same seed is in the group.
    _, transcript = await bot.get_json("/api/simulator/messages", group="g1", after=0)
    assert any("开奖啦" in m["text"] and seed in m["text"] for m in transcript["messages"] if m["from_bot"])
    assert page.errors == []  # type: ignore[attr-defined]

    phone = await open_page(browser, PHONE)
    await log_in(phone, bot, start="/console/lottery?lottery=1")
    await phone.wait_for_selector("#verification[data-ok='1']")
    await phone.screenshot(path=shot("console_lottery_proof_phone", db_url), full_page=True)


async def test_campaigns_page_shows_phases_countdown_and_summary(bot, browser, db_url):  # noqa: F811
    await seed_simulator(bot)
    await seed_campaign(bot, "g1")
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    page = await open_page(browser)
    await log_in(page, bot, start="/console/campaigns")
    card = page.locator("section.campaign")
    assert "距开售还有 2 天" in await card.locator(".countdown").inner_text()
    assert "爆发阶段" in await card.inner_text()
    assert await card.locator(".tl-phase").count() == 2 and await card.locator(".tl-phase.current").inner_text() == "爆发"
    width = await card.locator(".tl-burst").evaluate("el => el.style.width")
    assert width.endswith("%") and float(width[:-1]) > 30  # placed through the CSSOM (the CSP allows no inline style)
    await page.screenshot(path=shot("console_campaigns", db_url), full_page=True)
    await card.locator("a.campaign-link").click()
    await page.wait_for_selector("#campaign-summary")
    assert await page.locator("#campaign-posts tbody tr").count() == 1
    assert await page.locator("[data-kpi=posts] .kpi-value").inner_text() == "1"
    await page.screenshot(path=shot("console_campaign_summary", db_url), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
