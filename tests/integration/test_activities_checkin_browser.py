"""The check-in page in a real browser: Debian's headless Chromium (`make deps` installs the
`chromium` package where apt-get exists), driven by Playwright with that system browser (never
`playwright install`), on a phone's 360×740 screen, against the activities service served by
uvicorn on a free local port (in this process, on real NATS and nx-27017).

A coordinator opens the link, checks a member in and sees the page and then the API report it,
records a walk-in and a no-show through the forms, finds the QR code with its code in text; no
request leaves the machine, nothing is wider than the screen, and a revoked link shows the
refusal. A screenshot of each step is kept in the test's tmp directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import segno
import uvicorn

from sarafan.embedded import LOCALHOST, free_port
from shared.events import utcnow
from tests.helpers import wait_until
from tests.integration.activities_support import create, shift, sign_up
from tests.integration.conftest import Running
from tests.integration.test_activities_checkin_page import at, attendance_of, join

CHROMIUM = os.environ.get("SARAFAN_TEST_CHROMIUM", "/usr/bin/chromium")
#: The flags of a quiet, sandbox-less headless run: no network of its own (updates, sync,
#: QUIC probes), a fresh profile each time (the user-data-dir Playwright is given).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 360, "height": 740}
LONG_NAME = "Konstantinopolskaya-Vasilisa-Aleksandrovna-Rimsky-Korsakova-Zakharchenko"

pytestmark = [
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")),
        reason=(
            "chromium not installed (Debian package `chromium`: `make deps` installs it where "
            "apt-get exists)"
            if shutil.which("apt-get")
            else "chromium not installed and apt-get missing: `make deps` cannot install it"
        ),
    ),
    pytest.mark.timeout(180),
]


@asynccontextmanager
async def served(running: Running) -> AsyncIterator[str]:
    """The running service's app on a real local port (its lifespan is already running)."""
    port = free_port()
    config = uvicorn.Config(
        running.app, host=LOCALHOST, port=port, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started, timeout=10, message="uvicorn never started")
        yield f"http://{LOCALHOST}:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def phone_browser(profile: Path) -> AsyncIterator[tuple[object, list[str]]]:
    """A 360×740 page of the system Chromium with a fresh profile, and the list of every
    request it made that would have left this machine (those are refused)."""
    playwright_api = pytest.importorskip("playwright.async_api")
    executable = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    left: list[str] = []
    async with playwright_api.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=PHONE,
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
        )
        try:

            async def only_local(route) -> None:
                host = urlsplit(route.request.url).hostname
                if host in (LOCALHOST, "localhost") or route.request.url.startswith("data:"):
                    await route.continue_()
                else:
                    left.append(route.request.url)
                    await route.abort()

            await context.route("**/*", only_local)
            page = context.pages[0] if context.pages else await context.new_page()
            yield page, left
        finally:
            await context.close()


async def overflow(page) -> int:
    """How far the page is wider than the screen (0: nothing scrolls sideways)."""
    return int(await page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth"))


async def test_a_coordinator_checks_members_in_on_a_phone_and_the_api_reports_it(
    activities, nc, tmp_path
):
    began = time.perf_counter()
    http = activities.http
    anna, boris, vera, long_named, scripted = await join(
        nc, http, "Anna", "Boris", "Vera", LONG_NAME, "<script>document.title='x'</script>"
    )
    (gleb,) = await join(nc, http, "Gleb")
    starts = utcnow() + timedelta(hours=1)
    activity = await create(
        http,
        shifts=[shift(starts, hours=3, capacity=10), shift(starts, hours=3, role="registration")],
    )
    aid, sid = activity["activity_id"], activity["shifts"][0]["shift_id"]
    code = activity["shifts"][0]["checkin_code"]
    for member_id in (anna, boris, vera, long_named, scripted):
        assert (await sign_up(http, activity, member_id)).status_code == 201
    made = await http.post(f"/v1/activities/{aid}/checkin-link", json={"recorded_by": "m_olga"})
    at(activities, starts + timedelta(minutes=20))
    path = urlsplit(made.json()["url"]).path

    async with served(activities) as base, phone_browser(tmp_path / "profile") as (page, left):
        opened = await page.goto(f"{base}{path}")
        assert opened.status == 200
        assert await page.title() == f"Check-in · {activity['title']}"  # the name ran no script
        assert await page.get_by_text(LONG_NAME).is_visible()
        await page.screenshot(path=str(tmp_path / "1-opened.png"), full_page=True)
        assert await overflow(page) <= 0

        anna_row = page.locator(f"#r-{anna}")
        await anna_row.get_by_role("button", name="Arrived").click()
        await page.wait_for_url(lambda url: f"?shift={sid}&said=arrived&m={anna}" in url)
        assert await page.locator("#said").inner_text() == "Anna: arrived."
        assert await anna_row.locator(".badge.status").inner_text() == "arrived"
        await page.screenshot(path=str(tmp_path / "2-anna-arrived.png"), full_page=True)
        await page.screenshot(path=str(tmp_path / "2-anna-arrived-screen.png"))  # as seen

        item = await attendance_of(http, activity, anna)
        assert item["attendance"]["state"] == "present"
        assert item["attendance"]["recorded_by"] == "m_olga"
        read = (await http.get(f"/v1/activities/{aid}")).json()
        assert read["shifts"][0]["attended"] == 1

        await page.get_by_label("Member id").fill(gleb)
        await page.get_by_role("button", name="Check in as walk-in").click()
        await page.wait_for_url(lambda url: "said=walk-in" in url)
        assert await page.locator("#said").inner_text() == "Gleb: checked in as a walk-in."
        assert await page.locator(f"#r-{gleb} .badge.walkin").is_visible()

        await page.locator(f"#r-{boris}").get_by_role("button", name="No-show").click()
        await page.wait_for_url(lambda url: "said=no-show" in url)
        assert await page.locator(f"#r-{boris} .badge.status").inner_text() == "no-show"
        assert await page.locator(f"#r-{boris} button").count() == 0

        qr = page.locator("section.qr svg")
        assert await qr.count() == 1 and await qr.is_visible()
        drawn = await qr.locator("path[stroke]").get_attribute("d")
        expected = segno.make_qr(code, error="m").svg_inline(scale=1, border=4)
        assert f'd="{drawn}"' in expected  # the QR code of exactly this shift's code
        assert await page.locator("section.qr .code").inner_text() == code
        box = await qr.bounding_box()
        assert box is not None and box["width"] >= 150
        await page.locator("section.qr").scroll_into_view_if_needed()
        await page.screenshot(path=str(tmp_path / "3-after-actions.png"), full_page=True)
        assert await overflow(page) <= 0

        await page.get_by_role("link", name="registration").click()
        second = activity["shifts"][1]["shift_id"]
        await page.wait_for_url(lambda url: url.endswith(f"?shift={second}"))
        assert await page.get_by_text("No one is signed up for this shift yet.").is_visible()
        assert await overflow(page) <= 0

        assert (await http.delete(f"/v1/activities/{aid}/checkin-link")).status_code == 204
        refused = await page.goto(f"{base}{path}")
        assert refused.status == 404
        assert await page.get_by_role("heading").inner_text() == "This check-in link does not work"
        await page.screenshot(path=str(tmp_path / "4-revoked.png"), full_page=True)
        assert await overflow(page) <= 0
        assert left == [], f"requests left the machine: {left}"

    walk_in = await attendance_of(http, activity, gleb)
    assert walk_in["status"] == "walk-in" and walk_in["attendance"]["recorded_by"] == "m_olga"
    assert (await attendance_of(http, activity, boris))["attendance"]["state"] == "no-show"
    report = (await http.get(f"/v1/activities/{aid}/report")).json()
    assert (report["attended"], report["walk_ins"], report["no_shows"]) == (2, 1, 1)
    print(f"\nbrowser test: {time.perf_counter() - began:.1f} s; screenshots in {tmp_path}")
