"""A 200 MiB upload through the web page, in Debian's chromium driven by Playwright.

The file is written to disk in chunks and the browser streams it from there (an ``<input
type=file>`` gives the page a ``File``, which ``XMLHttpRequest`` sends without reading it into
memory). The page's progress bar must be seen at several byte counts strictly between 0 and the
size, which only a bar driven by the bytes actually sent can show; then the file is listed with
its size, and the node holds every byte of it. The harness (chromium, screenshots, sign-in) is
the one of ``test_ui_browser.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.integration.test_ui_browser import (
    SHOTS_COPY,
    WAIT_MS,
    catalog,
    chromium_path,
    open_signed_in,
    two_nodes,
)

MiB = 1024 * 1024
BIG_SIZE = 200 * MiB
WRITE_CHUNK = 4 * MiB
PROGRESS_VALUES_WANTED = 3
SENDING = re.compile(r"^[0-9.]+ (B|KiB|MiB) of 200 MiB · [0-9.]+ (B|KiB|MiB) to go")
UPLOAD_TIMEOUT_MS = 240_000
"""A safety stop for an upload that hangs (not a timing assert): a loaded 2-core machine was
measured at tens of seconds for the 200 MiB."""

# Every aria-valuenow the bar takes, recorded in the page as it changes (a MutationObserver
# sees each change, however short it lasts; polling from here could miss some).
RECORD_PROGRESS = """() => {
    window.shoalProgressSeen = [];
    new MutationObserver((records) => {
        for (const record of records) {
            const value = Number(record.target.getAttribute("aria-valuenow"));
            const figures = record.target.parentElement.querySelector(".figures");
            window.shoalProgressSeen.push([value, figures ? figures.textContent : ""]);
        }
    }).observe(
        document.body, {subtree: true, attributes: true, attributeFilter: ["aria-valuenow"]}
    );
}"""

# True once the bar has stood somewhere strictly between empty and full, or the upload is over
# (then the asserts below say what went wrong, at once rather than after a timeout).
MID_UPLOAD_OR_OVER = """(size) => {
    const between = window.shoalProgressSeen.some(([v]) => v > 0 && v < size);
    const row = document.querySelector('.upload[data-name="big video.bin"]');
    return between || (row !== null && ["done", "failed"].includes(row.dataset.status));
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


def write_random_file(path: Path, size: int) -> bytes:
    """``size`` random bytes at ``path``, written a chunk at a time (never all in memory).

    Returns:
        Their SHA-256.
    """
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            piece = os.urandom(min(left, WRITE_CHUNK))
            digest.update(piece)
            out.write(piece)
            left -= len(piece)
    return digest.digest()


@pytest.mark.timeout(600)
async def test_a_200_mib_upload_shows_its_bar_moving_then_is_listed(
    browser: Browser, tmp_path: Path
) -> None:
    big = tmp_path / "upload" / "big video.bin"
    expected = await asyncio.to_thread(write_random_file, big, BIG_SIZE)
    shots_dir = tmp_path / "screenshots"
    shots_dir.mkdir()
    SHOTS_COPY.mkdir(parents=True, exist_ok=True)

    async with two_nodes(tmp_path) as (first, _, api):
        page = await open_signed_in(browser, api, tmp_path)
        await page.evaluate(RECORD_PROGRESS)
        started = time.monotonic()
        await page.locator("#pick-files").set_input_files(str(big))
        row = page.locator('.upload[data-name="big video.bin"]')
        bar = row.locator(".bar")

        # Mid-upload: the bar is somewhere strictly between empty and full, in bytes.
        await page.wait_for_function(MID_UPLOAD_OR_OVER, arg=BIG_SIZE, timeout=UPLOAD_TIMEOUT_MS)
        shot = shots_dir / "files-uploading-200mib.png"
        await page.screenshot(path=str(shot), full_page=True, animations="disabled")
        shutil.copyfile(shot, SHOTS_COPY / shot.name)

        await expect(row).to_have_attribute(
            "data-status", re.compile("^(done|failed)$"), timeout=UPLOAD_TIMEOUT_MS
        )
        elapsed = time.monotonic() - started
        print(f"200 MiB browser upload: {elapsed:.1f} s, {BIG_SIZE / MiB / elapsed:.1f} MiB/s")

        seen: list[tuple[int, str]] = await page.evaluate("window.shoalProgressSeen")
        intermediate = [(value, text) for value, text in seen if 0 < value < BIG_SIZE]
        values = [value for value, _ in intermediate]
        print(f"the bar stood at {len(set(values))} byte counts between 0 and 200 MiB")
        assert len(set(values)) >= PROGRESS_VALUES_WANTED, [value for value, _ in seen]
        await expect(row).to_have_attribute("data-status", "done")
        assert values == sorted(values), "the bar went backwards"
        # Each step told the bytes sent and to go, as the bar stood then.
        for _, text in intermediate:
            assert SENDING.match(text), text
        await expect(bar).to_have_attribute("aria-valuenow", str(BIG_SIZE))
        await expect(row.locator(".figures")).to_contain_text("Stored · 200 MiB")

        listed = page.locator('tr[data-name="big video.bin"]')
        await expect(listed).to_be_visible(timeout=WAIT_MS)
        await expect(listed.locator("td.num")).to_have_text("200 MiB")
        stored = await catalog(api)
        assert stored["big video.bin"]["size"] == BIG_SIZE
        # ... and it is the bytes on disk, every one (read back a chunk at a time).
        digest = hashlib.sha256()
        async with first.get("big video.bin") as reader:
            async for chunk in reader:
                digest.update(chunk)
        assert digest.digest() == expected, "the node stored other bytes than the file's"
