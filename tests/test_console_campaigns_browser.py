"""Campaigns in the console, in a real browser (Debian's headless chromium via Playwright, SQLite and
PostgreSQL): create a campaign with the live preview of its countdown, put a scheduled post made in chat into
its burst phase, move the burst's first day and watch the preview's next runs and countdown follow before
saving. Screenshots go to tests/artifacts/ (see tests/test_console_browser.py for the browser set-up)."""

from __future__ import annotations

from datetime import timedelta

from storage import console as console_store
from storage.dashboard import local_today
from storage.db import utcnow
from tests.console_helpers import make_user, say, seed_simulator
from tests.test_console_browser import PHONE, browser, log_in, open_page, shot  # noqa: F401 - browser is a fixture


async def test_create_a_campaign_attach_a_post_and_move_a_phase_with_the_live_preview(bot, browser, db_url):  # noqa: F811
    await seed_simulator(bot)
    assert "定时推送已添加（编号 1）" in (await say(bot, "定时 添加 每天 20:00 今晚直播间见", "boss", "老板", role="owner"))[0]
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    today = local_today("Asia/Shanghai", utcnow())

    def day(n: int) -> str:
        return (today + timedelta(days=n)).isoformat()

    page = await open_page(browser)
    await log_in(page, bot, start="/console/campaigns")
    assert await page.locator("#no-campaigns").is_visible()
    await page.click("#campaign-new")
    await page.wait_for_selector("#campaign-form")
    await page.fill("input[name=name]", "d11")
    await page.fill("input[name=title]", "双十一大促")
    await page.fill("input[name=key_date]", day(10))
    await page.fill("input[name=key_name]", "开售")
    await page.check("input[name=phase_on][value=warmup]")
    await page.fill("input[name=phase_first][data-phase=warmup]", day(1))
    await page.fill("input[name=phase_last][data-phase=warmup]", day(4))
    # A mistake is named under its field as it is typed: the burst overlapping the warm-up.
    await page.check("input[name=phase_on][value=burst]")
    await page.fill("input[name=phase_first][data-phase=burst]", day(3))
    await page.wait_for_function("() => document.querySelector('[data-error-for=phases]').textContent.includes('结束之后开始')")
    await page.fill("input[name=phase_first][data-phase=burst]", day(5))
    await page.fill("input[name=phase_last][data-phase=burst]", day(10))
    await page.check("#campaign-groups label:has-text('演示群') input")
    await page.wait_for_function("() => document.querySelector('#preview-countdown').textContent.endsWith('还有 10 天')")
    assert await page.locator("[data-error-for=phases]").inner_text() == ""
    # The countdown on the campaign's days: {days_left} as the posts will read it.
    sample = page.locator(f"#preview-samples tr[data-day='{day(5)}']")
    assert "双十一大促·爆发：距关键日还有 5 天" in await sample.inner_text()
    assert await page.locator("#preview-milestones tr[data-milestone='phase:burst'][data-status=planned]").count() == 1
    await page.screenshot(path=shot("console_campaign_editor", db_url), full_page=True)
    await page.click("#campaign-save")
    await page.wait_for_selector("#campaign-title")
    assert "双十一大促" in await page.locator("#campaign-title").inner_text()
    assert "距开售还有 10 天" in await page.locator("#countdown").inner_text()

    # The post made in chat joins the burst: it will fire on the burst's first day.
    await page.select_option("#attach-post", "1")
    await page.select_option("#attach-phase", "burst")
    await page.click("#attach-save")
    row = page.locator("#campaign-posts tbody tr[data-post-id='1']")
    await row.locator("select.post-phase").wait_for()
    assert (await row.locator("td.next-run").inner_text()).startswith(f"{day(5)} 20:00")

    # Edit: the burst starts three days earlier. The preview follows the dates as they are typed.
    await page.click("#campaign-edit")
    await page.wait_for_selector("#campaign-form")
    first_run = "#preview-posts [data-post-id='1'] li[data-at]"
    await page.wait_for_function(f"() => document.querySelector(\"{first_run}\")?.textContent === '{day(5)} 20:00'")
    await page.fill("input[name=phase_last][data-phase=warmup]", day(1))
    await page.fill("input[name=phase_first][data-phase=burst]", day(2))
    await page.wait_for_function(f"() => document.querySelector(\"{first_run}\")?.textContent === '{day(2)} 20:00'")
    assert "双十一大促·爆发：距关键日还有 8 天" in await page.locator(f"#preview-samples tr[data-day='{day(2)}']").inner_text()
    assert await page.locator("#preview-problems li").count() == 0
    await page.screenshot(path=shot("console_campaign_edit_preview", db_url), full_page=True)
    await page.click("#campaign-save")
    await page.wait_for_selector("#campaign-title")
    assert (await page.locator("#campaign-posts tbody tr[data-post-id='1'] td.next-run").inner_text()).startswith(
        f"{day(2)} 20:00")
    await page.screenshot(path=shot("console_campaign_detail", db_url), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]

    # In chat, the group's admin sees the post in the campaign.
    reply = (await say(bot, "活动 d11", "boss", "老板", role="owner"))[0]
    assert f"【1】爆发 每天 20:00｜下次：{day(2)} 20:00｜今晚直播间见" in reply

    phone = await open_page(browser, PHONE)
    await log_in(phone, bot, start="/console/campaigns?edit=1")
    await phone.wait_for_selector("#campaign-preview [data-post-id='1']")
    await phone.screenshot(path=shot("console_campaign_editor_phone", db_url), full_page=True)
    assert phone.errors == []  # type: ignore[attr-defined]
