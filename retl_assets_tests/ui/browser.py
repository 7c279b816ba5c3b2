"""Headless Chromium from the system's packages, driven by Playwright.

Playwright's own browser download cannot run here (no network beyond package registries), so
it drives Debian's `chromium` (`.ci/run` installs it where missing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

CHROMIUM = os.environ.get("RETL_CHROMIUM", "/usr/bin/chromium")

# Without the background-networking flags Chromium keeps dialling Google's services, and on a
# closed network those refused connections slow every page down.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    """The Chromium binary, or None when this machine has none."""
    found = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    return found if found and os.access(found, os.X_OK) else None


@contextlib.contextmanager
def browser_page(width: int = 1920, height: int = 1200) -> Iterator:
    """A fresh page in a fresh profile (its own --user-data-dir), closed with all it started."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package "
                           "(`.ci/run` does) or set RETL_CHROMIUM to the binary")
    with tempfile.TemporaryDirectory(prefix="retl-chromium-") as profile, \
            sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, args=ARGS, headless=True,
            viewport={"width": width, "height": height})
        try:
            context.set_default_timeout(30_000)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
