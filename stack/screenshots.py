"""Screenshots and rendered text of the Temporal Web UI through headless Chromium (Debian's ``chromium``).

Used by the test that takes the README's operator screenshots against the real local stack; nothing in
the platform needs a browser. ``chromium`` is found on PATH (``/usr/bin/chromium`` from Debian's
package, which ``.ci/run`` installs when it can).

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages
separated by NUL bytes on file descriptors 3 and 4), in real time: the page of a running workflow keeps a
long poll open, which a virtual-time budget would wait on for ever. A page counts as rendered once its
text stops changing (or ``render_s`` has passed); the workflow pages' summaries and details are markdown
rendered in iframes, whose markdown is read from their addresses.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import select
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

WINDOW = (1400, 900)
# Seconds a page gets to load and render (the UI is a single-page app).
RENDER_S = 20.0
# The page is rendered once its text has not changed for this long (seconds).
SETTLED_S = 3.0
_CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                   "--disable-dev-shm-usage", "--remote-debugging-pipe")
_TAG = re.compile(r"<script.*?</script>|<style.*?</style>|<[^>]+>", re.DOTALL | re.IGNORECASE)
# The UI renders user markdown (summaries, details, current details) in iframes of /render?content=...
_RENDERED = re.compile(r"""<iframe[^>]*\ssrc="[^"]*/render\?content=([^&"]*)""", re.IGNORECASE)


class BrowserError(RuntimeError):
    """Chromium is missing or failed to render a page."""


def chromium_path() -> str | None:
    """Path of Debian's chromium (or a chromium-browser) on PATH, None when absent."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _DevTools:
    """One headless Chromium and a DevTools session on one page."""

    def __init__(self, window: tuple[int, int], timeout_s: float) -> None:
        browser = chromium_path()
        if browser is None:
            raise BrowserError("chromium is not installed (Debian: apt-get install chromium)")
        self._deadline = time.monotonic() + timeout_s
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        # The browser reads commands on fd 3 and writes answers on fd 4: bash puts the pipes there.
        redirect = f'exec "$0" "$@" 3<&{to_browser_read} 4>&{from_browser_write}'
        self._process = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", redirect, browser, *_CHROMIUM_FLAGS,
             f"--window-size={window[0]},{window[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(to_browser_read, from_browser_write))
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        self._window = window

    def close(self) -> None:
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._process.kill()
        self._process.wait(timeout=10)

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        """Send one command and wait for its answer (events in between are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self._session is not None:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"chromium: {method}: {answer['error'].get('message')}")
                result: dict[str, Any] = answer.get("result", {})
                return result

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError("chromium exited")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        decoded: dict[str, Any] = json.loads(raw)
        return decoded

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                  session=False)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": self._window[0], "height": self._window[1],
                                                         "deviceScaleFactor": 1, "mobile": False})
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})

    def html(self) -> str:
        answer = self.call("Runtime.evaluate", {"expression": "document.documentElement.outerHTML",
                                                "returnByValue": True})
        return str(answer.get("result", {}).get("value", ""))

    def settle(self, render_s: float) -> str:
        """Wait until the page's markup stops changing (or ``render_s`` passes); its markup."""
        end = time.monotonic() + render_s
        last, stable_since = "", time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.5)
            current = self.html()
            if current != last:
                last, stable_since = current, time.monotonic()
            else:
                stable_s = time.monotonic() - stable_since
                if (stable_s >= SETTLED_S and "</iframe>" in current) or stable_s >= 2 * SETTLED_S:
                    break
        return last

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])


def _render(url: str, window: tuple[int, int], render_s: float, timeout_s: float,
            path: Path | None) -> str:
    browser = _DevTools(window, timeout_s)
    try:
        browser.open(url)
        markup = browser.settle(render_s)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(browser.screenshot())
        return markup
    finally:
        browser.close()


def _text(markup: str) -> str:
    rendered = [urllib.parse.unquote(html.unescape(content)) for content in _RENDERED.findall(markup)]
    return " ".join(" ".join([html.unescape(_TAG.sub(" ", markup)), *rendered]).split())


def screenshot(url: str, path: Path, *, window: tuple[int, int] = WINDOW, render_s: float = RENDER_S,
               timeout_s: float = 90.0) -> Path:
    """Render ``url`` and write a PNG of the window (pixels ``window``) to ``path``; returns ``path``."""
    _render(url, window, render_s, timeout_s, path)
    if not path.is_file() or path.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot of {url}")
    return path


def rendered_text(url: str, *, render_s: float = RENDER_S, timeout_s: float = 90.0) -> str:
    """The visible text of ``url`` after its scripts ran (tags, scripts and styles removed, whitespace
    collapsed), followed by the markdown the page renders in its iframes (workflow summaries and details)."""
    return _text(_render(url, WINDOW, render_s, timeout_s, None))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height (pixels) of a PNG file, read from its header; ValueError if it is not a PNG."""
    header = path.read_bytes()[:24]
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
