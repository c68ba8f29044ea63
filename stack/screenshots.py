"""Screenshots and rendered text of the Temporal Web UI through headless Chromium (Debian's ``chromium``).

Used by the test that takes the README's operator screenshots against the real local stack; nothing in
the platform needs a browser. ``chromium`` is found on PATH (``/usr/bin/chromium`` from Debian's
package, which ``.ci/run`` installs when it can).
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

WINDOW = (1400, 900)
# Milliseconds of virtual time the page gets to load and render (the UI is a single-page app).
RENDER_BUDGET_MS = 10_000
_CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                   "--disable-dev-shm-usage")
_TAG = re.compile(r"<script.*?</script>|<style.*?</style>|<[^>]+>", re.DOTALL | re.IGNORECASE)


class BrowserError(RuntimeError):
    """Chromium is missing or failed to render a page."""


def chromium_path() -> str | None:
    """Path of Debian's chromium (or a chromium-browser) on PATH, None when absent."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(arguments: list[str], timeout_s: float) -> str:
    browser = chromium_path()
    if browser is None:
        raise BrowserError("chromium is not installed (Debian: apt-get install chromium)")
    try:
        done = subprocess.run([browser, *_CHROMIUM_FLAGS, *arguments], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        raise BrowserError(f"chromium did not finish within {timeout_s:g} s: {' '.join(arguments)}") from error
    if done.returncode != 0:
        raise BrowserError(f"chromium exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def screenshot(url: str, path: Path, *, window: tuple[int, int] = WINDOW, budget_ms: int = RENDER_BUDGET_MS,
               timeout_s: float = 60.0) -> Path:
    """Render ``url`` and write a PNG of the window (pixels ``window``) to ``path``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--window-size={window[0]},{window[1]}", f"--virtual-time-budget={budget_ms}",
          f"--screenshot={path}", url], timeout_s)
    if not path.is_file() or path.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot of {url}")
    return path


def rendered_text(url: str, *, budget_ms: int = RENDER_BUDGET_MS, timeout_s: float = 60.0) -> str:
    """The visible text of ``url`` after its scripts ran (tags, scripts and styles removed, whitespace
    collapsed)."""
    dom = _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout_s)
    return " ".join(html.unescape(_TAG.sub(" ", dom)).split())


def png_size(path: Path) -> tuple[int, int]:
    """Width and height (pixels) of a PNG file, read from its header; ValueError if it is not a PNG."""
    header = path.read_bytes()[:24]
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
