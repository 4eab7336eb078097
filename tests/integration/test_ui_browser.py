"""The web UI in a real browser: Debian's chromium, headless, driven by Playwright.

Two real nodes in this event loop (real TLS between them); the browser talks to the first one's
HTTP API over a real socket. Playwright's own browsers are never downloaded: the system
chromium is used (`.ci/run` installs it with apt). Screenshots of each page, wide and narrow, go
to ``<tmp_path>/screenshots`` and are copied to ``/tmp/ui-shots/`` for people to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from shoal import Node
from shoal.api.http import ApiServer, serve_api
from shoal.cli.ui import login_link
from tests.integration.conftest import Cluster

SHOTS_COPY = Path("/tmp/ui-shots")
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}
WAIT_MS = 30_000
expect.set_options(timeout=WAIT_MS)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path is not None, "the browser tests need Debian's chromium: apt-get install chromium"
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


class Shots:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        SHOTS_COPY.mkdir(parents=True, exist_ok=True)

    async def take(self, page: Page, name: str) -> None:
        path = self.root / f"{name}.png"
        await page.evaluate("window.scrollTo(0, 0)")
        # Nothing sticks out sideways, whatever the width (a narrow window scrolls down only).
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: the page is {overflow} px wider than the window"
        await page.screenshot(path=str(path), full_page=True, animations="disabled")
        shutil.copyfile(path, SHOTS_COPY / path.name)


async def open_signed_in(browser: Browser, api: ApiServer, tmp_path: Path) -> Page:
    context = await browser.new_context(viewport=WIDE, accept_downloads=True)
    context.set_default_timeout(WAIT_MS)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=api.url)
    page = await context.new_page()
    page.on("pageerror", lambda exc: print(f"page error: {exc}"))
    page.on("console", lambda msg: print(f"console: {msg.text} {msg.location}"))
    link = await asyncio.to_thread(login_link, api.data_dir)
    await page.goto(link)
    await expect(page).to_have_url(f"{api.url}/ui/")
    await expect(page.locator("#page-files")).to_be_visible()
    return page


async def catalog(api: ApiServer) -> dict[str, dict[str, object]]:
    async with httpx.AsyncClient(base_url=api.url, trust_env=False, timeout=30) as http:
        response = await http.get("/v1/files", headers={"Authorization": f"Bearer {api.token}"})
        response.raise_for_status()
        return {f["name"]: f for f in response.json()}


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, ApiServer]]:
    async with contextlib.AsyncExitStack() as stack:
        cluster = Cluster(tmp_path / "net", stack)
        first = await cluster.add("a", replicas=2)
        second = await cluster.add("b", peers=[first.listen_address], replicas=2)
        await first.wait_for_peers(1)
        api = await stack.enter_async_context(serve_api(first, first.data_dir))
        yield first, second, api


async def test_files_network_and_activity_in_a_browser(browser: Browser, tmp_path: Path) -> None:
    shots = Shots(tmp_path / "screenshots")
    big = tmp_path / "upload" / "holiday video.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(12 * 1024 * 1024 + 4321))
    folder = tmp_path / "upload" / "photos"
    (folder / "2024").mkdir(parents=True)
    (folder / "cat.txt").write_bytes(b"meow\n")
    (folder / "2024" / "dog.txt").write_bytes(b"woof\n" * 1000)

    async with two_nodes(tmp_path) as (first, second, api):
        page = await open_signed_in(browser, api, tmp_path)
        await expect(page.locator("#files-empty")).to_be_visible()
        await shots.take(page, "files-empty-wide")

        # -- upload by picking a file, on a slowed-down link so that the bar is seen moving
        # (bytes, speed, time left), then reaching done.
        watcher = await page.context.new_page()  # the activity page, beside the files page
        await watcher.goto(f"{api.url}/ui/#activity")
        await expect(watcher.locator("#live")).to_have_class("live on")
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": 3 * 1024 * 1024,
            },
        )
        await page.locator("#pick-files").set_input_files(str(big))
        row = page.locator('.upload[data-name="holiday video.bin"]')
        await expect(row.locator(".figures")).to_contain_text(" to go · ")
        await expect(row.locator(".figures")).to_contain_text("/s · ")
        await shots.take(page, "files-uploading-wide")
        # The node reports the same upload live, with the bytes it still expects.
        running = watcher.locator("#running .transfer", has_text="holiday video.bin")
        await expect(running.locator(".detail")).to_have_text(
            re.compile(r"^[1-9][0-9.]* (KiB|MiB) of 12 MiB · [0-9.]+ (KiB|MiB) to go")
        )
        await shots.take(watcher, "activity-running-wide")
        await watcher.close()
        await expect(row).to_have_attribute("data-status", "done")
        await expect(row.locator(".figures")).to_contain_text("Stored · 12 MiB")
        bar = row.locator(".bar")
        await expect(bar).to_have_attribute("aria-valuenow", str(big.stat().st_size))
        await cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        listed = page.locator('tr[data-name="holiday video.bin"]')
        await expect(listed).to_be_visible()
        await expect(listed.locator("td.num")).to_have_text("12 MiB")

        # -- a dropped file (a drop event with a DataTransfer, as a real drag makes).
        await page.evaluate(
            """() => {
                const transfer = new DataTransfer();
                const file = new File(["dropped bytes"], "dropped.txt", {type: "text/plain"});
                transfer.items.add(file);
                const zone = document.getElementById("dropzone");
                zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
            }"""
        )
        await expect(page.locator('.upload[data-name="dropped.txt"]')).to_have_attribute(
            "data-status", "done"
        )

        # -- a folder. Where the API stores folders whole (PUT /v1/folders/...), it is one
        # entry, browsed level by level; otherwise its files keep their paths as names, and the
        # page groups them into a folder to open.
        session = await page.evaluate("fetch('/ui/api/session').then(r => r.json())")
        await page.locator("#pick-folder").set_input_files(str(folder))
        if session["folders"]:
            await expect(page.locator('.upload[data-name="photos"]')).to_have_attribute(
                "data-status", "done"
            )
            folder_row = page.locator('tr.folder-row[data-name="photos"]')
            await expect(folder_row).to_be_visible()
            await shots.take(page, "files-wide")
            async with page.expect_download() as download_info:
                await folder_row.get_by_role("link", name="Download .tar").click()
            archive = tmp_path / "photos.tar"
            await (await download_info.value).save_as(archive)
            with tarfile.open(archive) as tar:
                cat = tar.extractfile("photos/cat.txt")
                assert cat is not None
                assert cat.read() == b"meow\n"
            await folder_row.get_by_role("button", name="Open").click()
            await expect(page.locator("#crumbs")).to_have_text("My files/photos")
            await expect(page.locator('tr[data-entry="cat.txt"]')).to_be_visible()
            await shots.take(page, "files-folder-wide")
            await page.locator('tr[data-entry="2024"]').get_by_role("button", name="Open").click()
            await expect(page.locator("#crumbs")).to_have_text("My files/photos/2024")
            async with page.expect_download() as download_info:
                await page.locator('tr[data-entry="dog.txt"]').get_by_role("link").first.click()
            inner = await download_info.value
            assert inner.suggested_filename == "dog.txt"
            await inner.save_as(tmp_path / "dog.txt")
            assert (tmp_path / "dog.txt").read_bytes() == b"woof\n" * 1000
            expected_names = {"holiday video.bin", "dropped.txt", "photos"}
        else:
            await expect(
                page.locator('.upload[data-name="photos/2024/dog.txt"]')
            ).to_have_attribute("data-status", "done")
            await expect(page.locator('.upload[data-name="photos/cat.txt"]')).to_have_attribute(
                "data-status", "done"
            )
            folder_row = page.locator('tr.folder-row[data-folder="photos/"]')
            await expect(folder_row).to_contain_text("2 files")
            await shots.take(page, "files-wide")
            await folder_row.get_by_role("button", name="Open").click()
            await expect(page.locator("#crumbs")).to_have_text("My files/photos")
            await expect(page.locator('tr[data-name="photos/cat.txt"]')).to_be_visible()
            await shots.take(page, "files-folder-wide")
            expected_names = {
                "holiday video.bin",
                "dropped.txt",
                "photos/cat.txt",
                "photos/2024/dog.txt",
            }
        await page.locator("#crumbs a", has_text="My files").click()
        await expect(listed).to_be_visible()
        stored = await catalog(api)
        assert set(stored) == expected_names

        # -- download: the bytes that come back are the bytes that went up.
        async with page.expect_download() as download_info:
            await listed.get_by_role("link", name="Download").click()
        download = await download_info.value
        assert download.suggested_filename == "holiday video.bin"
        saved = tmp_path / "downloaded.bin"
        await download.save_as(saved)
        assert (
            hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
        )

        # -- copy the read cap.
        await listed.get_by_role("button", name="Copy cap").click()
        await expect(page.locator("#toast")).to_contain_text("Read cap of holiday video.bin copied")
        copied = await page.evaluate("navigator.clipboard.readText()")
        assert copied == stored["holiday video.bin"]["cap"]

        # -- paste a cap someone shared and keep it under a name.
        await page.locator("#shared summary").click()
        await page.locator("#cap-input").fill(str(stored["dropped.txt"]["cap"]))
        await page.locator("#cap-name").fill("shared cat.txt")  # kept under a name of its own
        await page.locator("#cap-keep").click()
        await expect(page.locator('tr[data-name="shared cat.txt"]')).to_be_visible()
        # ... and a verify cap is explained, not sent.
        await page.locator("#cap-input").fill("shoal:v:abc")
        await page.locator("#cap-download").click()
        await expect(page.locator("#cap-error")).to_contain_text("verify cap")

        # -- remove (two clicks: the first asks).
        remove = page.locator('tr[data-name="dropped.txt"]').get_by_role("button", name="Remove")
        await remove.click()
        await expect(remove).to_have_text("Remove?")
        await remove.click()
        await expect(page.locator('tr[data-name="dropped.txt"]')).to_have_count(0)
        assert "dropped.txt" not in await catalog(api)

        await expect(page.locator("#toast")).to_be_hidden()
        await page.set_viewport_size(NARROW)
        await shots.take(page, "files-narrow")
        await page.set_viewport_size(WIDE)
        await page.emulate_media(color_scheme="dark")  # the system's dark setting is followed
        await shots.take(page, "files-dark-wide")
        await page.emulate_media(color_scheme="light")

        # -- network: the peer, its state, address and how it was learnt; the map.
        await page.get_by_role("link", name="Network").click()
        peer = page.locator(f'tr[data-node="{second.node_id}"]')
        await expect(peer).to_contain_text("connected")
        await expect(peer).to_contain_text(second.listen_address)
        await expect(peer).to_contain_text("inbound")
        await expect(page.locator("#netmap line.link")).to_have_count(1)
        await expect(page.locator("#storage")).to_contain_text("Free")
        await shots.take(page, "network-wide")
        await page.set_viewport_size(NARROW)
        await shots.take(page, "network-narrow")
        await page.set_viewport_size(WIDE)

        # -- activity: the finished upload and download, and the live feed.
        await page.get_by_role("link", name="Activity").click()
        finished = page.locator("#finished .transfer")
        await expect(finished.filter(has_text="holiday video.bin").first).to_be_visible()
        upload = page.locator("#finished .transfer.done", has_text="Put").filter(
            has_text="holiday video.bin"
        )
        await expect(upload).to_contain_text("Done · 12 MiB")
        await expect(page.locator("#live")).to_have_class("live on")
        # A get made elsewhere (not by this page) shows up live, without a reload.
        async with first.get("shared cat.txt") as reader:
            assert await reader.read() == b"dropped bytes"
        await expect(
            page.locator("#finished .transfer.done", has_text="Get").filter(
                has_text="shared cat.txt"
            )
        ).to_be_visible()
        await shots.take(page, "activity-wide")
        await page.set_viewport_size(NARROW)
        await shots.take(page, "activity-narrow")


async def test_a_used_sign_in_link_and_no_session_show_how_to_sign_in(
    browser: Browser, tmp_path: Path
) -> None:
    shots = Shots(tmp_path / "screenshots")
    async with two_nodes(tmp_path) as (_, _, api):
        link = await asyncio.to_thread(login_link, api.data_dir)
        first = await browser.new_context(viewport=WIDE)
        page = await first.new_page()
        await page.goto(link)
        await expect(page.locator("#page-files")).to_be_visible()

        other = await browser.new_context(viewport=WIDE)
        intruder = await other.new_page()
        response = await intruder.goto(link)
        assert response is not None
        assert response.status == 401
        await expect(intruder.locator("h1")).to_have_text("This sign-in link does not work")
        await shots.take(intruder, "login-link-used")
        await intruder.goto(f"{api.url}/ui/")
        await expect(intruder.locator("#page-signin")).to_be_visible()
        await expect(intruder.locator("#page-files")).to_be_hidden()
        await shots.take(intruder, "signin-needed")
        # The first browser's session is unaffected, until it signs out.
        await page.reload()
        await expect(page.locator("#page-files")).to_be_visible()
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.locator("#page-signin")).to_be_visible()
        await page.reload()
        await expect(page.locator("#page-signin")).to_be_visible()
        await expect(page.locator("#page-files")).to_be_hidden()
