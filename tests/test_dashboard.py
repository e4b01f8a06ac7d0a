"""The dashboard at /ui: the page in a real headless Chromium (Playwright, async API, the
system's browser), and its server-sent event stream /ui/events over plain HTTP.

The browser tests skip, saying what to install, when Playwright or a chromium binary is missing.
Every test here runs on one event loop per module, so the browser (launched once per module),
the in-process runners and the test share it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import pytest_asyncio

from taskrunner.api import dashboard
from taskrunner.runner import Runner
from tests.support.http import base_url, http
from tests.support.redis_servers import RedisServer
from tests.support.runners import RunnerHarness, stored_job, wait_state
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

# slow: a browser (Playwright's chromium)
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CHROMIUM_ENV_VAR = "TASKRUNNER_TEST_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TOKEN = "dashboard-test-token"
HOSTILE = "<img src=x onerror=alert(1)>"
UI_FILES = Path(dashboard.__file__).parent.parent / "ui"
WAIT_MS = 8000  # browser-side waits; live updates arrive within a second


def chromium_path() -> str | None:
    """$TASKRUNNER_TEST_CHROMIUM, else the first chromium-like browser on PATH."""
    wanted = os.environ.get(CHROMIUM_ENV_VAR, "").strip()
    if wanted:
        return wanted
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest_asyncio.fixture(loop_scope="module")
async def runners(redis_url: str) -> AsyncIterator[RunnerHarness]:
    """conftest's `runners`, on this module's event loop (the browser's)."""
    harness = RunnerHarness(redis_url)
    try:
        yield harness
    finally:
        await harness.stop_all()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "browser tests need Chromium: apt-get install -y chromium"
            f" (or set {CHROMIUM_ENV_VAR}=/path/to/chromium)"
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("browser tests need Playwright: .venv/bin/pip install -e '.[test]'")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh tab (own sessionStorage) at 1280 px; fails the test on any script error or
    dialog (an alert() would mean injected markup ran)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    tab = await context.new_page()
    tab.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    async def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog: {dialog.message}")
        await dialog.dismiss()

    tab.on("dialog", on_dialog)
    try:
        yield tab
    finally:
        await context.close()
    assert not problems, problems


async def open_dashboard(page: Page, runner: Runner, query: str = "") -> None:
    await page.goto(f"{base_url(runner)}/ui{query}")
    await page.wait_for_selector("#live.on")  # the event stream said hello
    await page.wait_for_selector("#channels tr[data-channel='default']")


async def submit(runner: Runner, **fields: Any) -> dict[str, Any]:
    status, view = await http(runner, "POST", "/api/jobs", json=fields)
    assert status == 201, view
    return dict(view)


def job_row(table: str, job_id: str, state: str = "") -> str:
    selector = f"#{table} tr[data-job='{job_id}']"
    return f"{selector}[data-state='{state}']" if state else selector


# -- in the browser -----------------------------------------------------------------------------


async def test_page_lists_every_channel_with_counts(page: Page, runners: RunnerHarness) -> None:
    runner = await runners.start()
    status, _ = await http(
        runner, "POST", "/api/channels", json={"name": "mail", "worker_count": 3}
    )
    assert status == 201
    await submit(runner, task="sleep 30", channel="mail", run_at=time.time() + 3600)

    await open_dashboard(page, runner)
    names = await page.locator("#channels tbody td.chan").all_text_contents()
    assert names == ["biz", "cron", "default", "mail"]
    mail = page.locator("#channels tr[data-channel='mail']")
    cells = await mail.locator("td").all_text_contents()
    # channel, status, queued, scheduled, running, dead, workers, distinct, ...
    assert cells[:6] == ["mail", "active", "0", "1", "0", "0"], cells
    assert await mail.locator("input.workers").input_value() == "3"
    assert await page.title() == "taskrunner"


async def test_pushed_job_appears_runs_and_finishes_without_reload(
    page: Page, runners: RunnerHarness
) -> None:
    runner = await runners.start()
    await open_dashboard(page, runner)
    await page.evaluate("window.__sameDocument = true")

    # Long enough that a loaded machine's page still sees it running.
    await page.fill("#push-task", "sleep 3")
    await page.select_option("#push-channel", "biz")
    await page.click("#push-submit")
    pushed = page.locator("#push-result button")
    job_id = await pushed.get_attribute("title")
    assert job_id

    await page.wait_for_selector(job_row("running", job_id))  # with its age ticking
    await page.wait_for_selector(job_row("jobs", job_id, "running"))
    await page.wait_for_selector(job_row("jobs", job_id, "succeeded"))  # told by the stream
    cells = await page.locator(job_row("jobs", job_id)).locator("td").all_text_contents()
    assert cells[2:6] == ["biz", "sleep 3", "1", "0"], cells  # channel, command, attempt, exit
    assert await page.locator(job_row("running", job_id)).count() == 0

    # A job pushed by someone else (a producer on Redis) shows up as well.
    await runner.store.redis.lpush(
        "task:prepare:queue", json.dumps({"task": "echo from-redis", "chan": "cron"})
    )
    await page.wait_for_selector("#jobs tr[data-state='succeeded'] >> text=echo from-redis")
    assert await page.evaluate("window.__sameDocument") is True  # no reload happened

    await page.click(job_row("jobs", job_id))
    await page.wait_for_selector("#detail-body pre[data-output='stdout']")
    assert await page.locator("#detail-state .badge").text_content() == "succeeded"


async def test_pause_resume_and_worker_count_from_the_page(
    page: Page, runners: RunnerHarness
) -> None:
    runner = await runners.start()
    await open_dashboard(page, runner)
    biz = page.locator("#channels tr[data-channel='biz']")

    async def stored(field: str) -> Any:
        config = await runner.store.get_channel("biz")
        assert config is not None
        return config.as_dict()[field]

    await biz.get_by_role("button", name="Pause").click()
    await wait_until(lambda: stored("paused"), message="biz paused in Redis")
    await page.wait_for_selector("#channels tr[data-channel='biz'] .badge.paused")

    await biz.get_by_role("button", name="Resume").click()

    async def resumed() -> bool:
        return await stored("paused") is False

    await wait_until(resumed, message="biz resumed in Redis")
    await page.wait_for_selector("#channels tr[data-channel='biz'] .badge.active")

    await biz.locator("input.workers").fill("7")
    await biz.get_by_role("button", name="Set").click()

    async def seven() -> bool:
        return await stored("worker_count") == 7

    await wait_until(seven, message="biz worker_count 7 in Redis")


async def test_dead_job_is_retried_and_dead_letter_dropped_from_the_page(
    page: Page, runners: RunnerHarness
) -> None:
    runner = await runners.start()
    await open_dashboard(page, runner)
    job = await submit(runner, task="false", channel="biz", retries=1, retry_intervals=[0.1])
    await wait_state(runner.store, job["id"], "dead")
    row = page.locator(job_row("dead", job["id"]))
    await row.wait_for()  # told by the event stream
    assert await page.locator("#channels tr[data-channel='biz'] td").nth(5).text_content() == "1"

    await row.get_by_role("button", name="Retry").click()

    async def revived() -> bool:
        record = await stored_job(runner.store, job["id"])
        return record.revived == 1

    await wait_until(revived, message="the dead job queued again")
    await wait_state(runner.store, job["id"], "dead")  # `false` fails again, on its own
    await page.wait_for_selector(job_row("dead", job["id"]))

    await runner.store.redis.lpush("task:prepare:queue", "{not json")
    letter = page.locator("#letters tbody tr")
    await letter.wait_for()
    assert "not valid JSON" in (await letter.locator("td.reason").text_content() or "")
    drop = letter.get_by_role("button", name="Drop")
    await drop.click()  # arms
    await page.wait_for_selector("#letters button.confirm")
    await drop.click()
    await wait_until(lambda: _no_dead_letters(runner), message="the dead letter dropped")
    await page.wait_for_selector("#letters-empty:not([hidden])")


async def _no_dead_letters(runner: Runner) -> bool:
    return await runner.store.dead_letter_count() == 0


async def test_jobs_list_pages_newest_first_and_filters_by_command(
    page: Page, runners: RunnerHarness
) -> None:
    runner = await runners.start()
    shown = 100  # app.js JOBS_SHOWN

    async def push(task: str) -> str:
        admission = await runner.service.submit({"task": task, "delay": 3600}, source="t")
        return admission.job_id

    ids = [await push(f"echo {'needle' if n == 2 else 'hay'} {n}") for n in range(shown + 5)]
    await open_dashboard(page, runner)
    rows = page.locator("#jobs tbody tr")
    await page.wait_for_selector(job_row("jobs", ids[-1]))
    assert await rows.count() == shown
    assert await rows.first.get_attribute("data-job") == ids[-1]  # newest first
    assert await rows.last.get_attribute("data-job") == ids[5]
    assert await page.is_disabled("#jobs-newer")

    await page.click("#jobs-older")
    await page.wait_for_selector(job_row("jobs", ids[4]))
    assert [await r.get_attribute("data-job") for r in await rows.all()] == ids[4::-1]
    assert await page.is_disabled("#jobs-older")
    later = await push("echo later")  # newer than every page: page 2 stays as it is
    assert await runner.service.cancel(ids[0]) == "cancelled"  # page 2 is refreshed, in place
    await page.wait_for_selector(job_row("jobs", ids[0], "cancelled"))
    assert [await r.get_attribute("data-job") for r in await rows.all()] == ids[4::-1]
    await page.locator("#jobs-note", has_text="page 2").wait_for()

    await page.click("#jobs-newer")
    await page.wait_for_selector(job_row("jobs", later))
    assert await rows.first.get_attribute("data-job") == later
    await page.fill("#filter-command", "NEEDLE")
    await page.wait_for_selector(f"#jobs tbody tr:only-child[data-job='{ids[2]}']")
    assert await page.is_disabled("#jobs-older") and await page.is_disabled("#jobs-newer")


async def test_job_content_is_shown_as_text_never_as_markup(
    page: Page, runners: RunnerHarness
) -> None:
    runner = await runners.start()
    echoed = await submit(runner, task="echo", args=[HOSTILE], channel="biz")
    named = await submit(runner, task=HOSTILE, channel="cron")
    await wait_state(runner.store, echoed["id"], "succeeded")
    await wait_state(runner.store, named["id"], "failed", "dead")

    await open_dashboard(page, runner, f"#job={echoed['id']}")
    stdout = page.locator("#detail-body pre[data-output='stdout']")
    await stdout.wait_for()
    assert await stdout.text_content() == HOSTILE + "\n"
    await page.wait_for_selector(job_row("jobs", named["id"]))
    assert HOSTILE in await page.locator("#jobs td.cmd").all_text_contents()
    args = page.locator("#detail-body .kv tr", has_text="args").locator("td")
    assert await args.text_content() == json.dumps([HOSTILE])
    assert await page.locator("img").count() == 0  # no element was made from job data


async def test_auth_token_guards_the_page_and_is_taken_from_the_query(
    page: Page, runners: RunnerHarness
) -> None:
    runner = await runners.start(auth_token=TOKEN)
    status, body = await http(runner, "GET", "/ui")
    assert status == 401 and "/ui?token=" in body
    assert (await http(runner, "GET", "/ui?token=wrong"))[0] == 401
    assert (await http(runner, "GET", "/ui/events"))[0] == 401
    assert (await http(runner, "GET", f"/api/stats?token={TOKEN}"))[0] == 401  # header only
    status, html = await http(runner, "GET", f"/ui?token={TOKEN}")
    assert status == 200 and TOKEN not in html

    await open_dashboard(page, runner, f"?token={TOKEN}")  # API calls and the stream work
    assert await page.evaluate("sessionStorage.getItem('taskrunner.token')") == TOKEN
    assert TOKEN not in await page.content()


# -- over plain HTTP ------------------------------------------------------------------------------


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(event name, decoded data) for each event of a text/event-stream response."""
    name, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and data:
            yield name, json.loads(data)
            name, data = "message", ""


async def test_page_shows_a_unicode_channel_and_pushes_to_it(
    page: Page, runners: RunnerHarness
) -> None:
    """Channel names as upstream took them (issue 14): unicode, spaces and quotes."""
    runner = await runners.start()
    name = '报表 "q"'
    status, _ = await http(runner, "POST", "/api/channels", json={"name": name})
    assert status == 201
    await submit(runner, task="sleep 30", channel=name, run_at=time.time() + 3600)

    await open_dashboard(page, runner)
    names = await page.locator("#channels tbody td.chan").all_text_contents()
    assert name in names, names
    row = page.locator("#channels tbody tr").filter(has_text=name)
    cells = await row.locator("td").all_text_contents()
    assert cells[:6] == [name, "active", "0", "1", "0", "0"], cells
    assert await row.get_attribute("data-channel") == name


async def test_event_stream_tells_when_a_job_ends(runners: RunnerHarness) -> None:
    runner = await runners.start()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url(runner)}/ui/events") as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        events = read_events(response)
        assert await anext(events) == ("hello", {})
        job = await submit(runner, task="true", channel="biz")

        async def until_final() -> dict[str, Any]:
            async for name, data in events:
                assert name == "change"
                if data["jobs"].get(job["id"]) == "succeeded":
                    return dict(data)
            raise AssertionError("the stream ended")

        change = await asyncio.wait_for(until_final(), timeout=10)
    assert change["notices"] >= 1 and not change["dead_letters"]


async def test_event_stream_names_a_spaced_channel_whole(runners: RunnerHarness) -> None:
    """A schedule notice is "<channel> <ms>": the stream must not cut "my chan" to "my"."""
    runner = await runners.start()
    status, _ = await http(runner, "POST", "/api/channels", json={"name": "my chan"})
    assert status == 201
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url(runner)}/ui/events") as response,
    ):
        events = read_events(response)
        assert await anext(events) == ("hello", {})
        await submit(runner, task="true", channel="my chan", run_at=time.time() + 3600)

        async def until_queue() -> list[str]:
            async for _, data in events:
                if data["queues"]:
                    return list(data["queues"])
            raise AssertionError("the stream ended")

        assert await asyncio.wait_for(until_queue(), timeout=10) == ["my chan"]


async def _subscribers(runner: Runner) -> int:
    [(_, count)] = await runner.store.redis.pubsub_numsub("task:events:job")
    return int(count)


async def test_event_streams_share_one_subscription_and_end_promptly_at_stop(
    runners: RunnerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "KEEPALIVE_S", 0.2)  # notice a gone page quickly
    runner = await runners.start()
    observer = runner.store.redis
    url = f"{base_url(runner)}/ui/events"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as first, session.get(url) as second:
            for response in (first, second):
                assert await anext(read_events(response)) == ("hello", {})
            assert await _subscribers(runner) == 1  # one Redis subscription for every page
        await wait_until(
            lambda: _subscribers_are(runner, 0), message="the last stream's unsubscribe"
        )

        async with session.get(url) as response:
            assert await anext(read_events(response)) == ("hello", {})
            started = time.monotonic()
            await runner.close()  # what a stop signal leads to, HTTP server included
            await asyncio.wait_for(response.content.read(), timeout=5)  # to the end
            assert time.monotonic() - started < 5
    [(_, count)] = await observer.pubsub_numsub("task:events:job")
    assert count == 0


async def test_event_stream_ends_when_redis_goes_away_and_works_once_it_is_back(
    runners: RunnerHarness, redis_server: RedisServer
) -> None:
    runner = await runners.start()
    url = f"{base_url(runner)}/ui/events"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert await anext(read_events(response)) == ("hello", {})
            redis_server.stop()
            try:
                # The page's EventSource reconnects after `retry`; it re-reads everything then.
                await asyncio.wait_for(response.content.read(), timeout=10)
                async with session.get(url) as refused:
                    assert refused.status == 503
            finally:
                redis_server.start()
        async with session.get(url) as response:
            assert await anext(read_events(response)) == ("hello", {})
            status, _ = await http(runner, "POST", "/api/channels", json={"name": "after"})
            assert status == 201  # the restarted test server is empty
            async for name, data in read_events(response):
                if name == "change" and "after" in data["channels"]:
                    break


async def _subscribers_are(runner: Runner, count: int) -> bool:
    return await _subscribers(runner) == count


async def test_event_streams_are_capped(
    runners: RunnerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "MAX_STREAMS", 1)
    runner = await runners.start()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url(runner)}/ui/events") as first,
    ):
        assert await anext(read_events(first)) == ("hello", {})
        async with session.get(f"{base_url(runner)}/ui/events") as second:
            assert second.status == 503
            assert "event streams are open" in await second.text()


async def test_page_allows_only_its_own_script_and_builds_no_markup_from_data(
    runners: RunnerHarness,
) -> None:
    runner = await runners.start()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url(runner)}/ui") as response,
    ):
        assert response.status == 200 and response.content_type == "text/html"
        policy = response.headers["Content-Security-Policy"]
        html = await response.text()
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy
    assert html.count("<script>") == 1 and "<!--inline:" not in html
    source = (UI_FILES / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source, f"app.js uses {sink}: build DOM nodes with text instead"


async def test_job_panel_shows_the_note(page: Page, runners: RunnerHarness) -> None:
    runner = await runners.start()
    job = await submit(runner, task="true", note="asked by ops <b>now</b>")
    await wait_state(runner.store, job["id"], "succeeded")
    await open_dashboard(page, runner, f"#job={job['id']}")
    note = page.locator("#detail-body .kv tr", has_text="note").locator("td")
    await note.wait_for()
    assert await note.text_content() == "asked by ops <b>now</b>"
