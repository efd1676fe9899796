"""Headless Chromium for the browser tests and the screenshots: one executable path and one
set of flags (no sandbox as root; no background networking, which a machine without internet
answers with refused connections)."""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(playwright, executable: str = CHROMIUM):
    """A Chromium browser from a Playwright instance (``sync_playwright()``'s)."""
    return playwright.chromium.launch(executable_path=executable, args=ARGS)
