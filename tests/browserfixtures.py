"""A real headless Chromium for the web page's tests: Debian's ``chromium`` driven by
Playwright for Python through ``executable_path`` (no browser download is possible here;
``.ci/run`` installs both). A test signs in through the page like a person does, and may keep
screenshots, which go to ``$FLOWRAY_SCREENSHOTS`` or ``build/screenshots/`` (out of git)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(os.environ.get("FLOWRAY_SCREENSHOTS")
                   or Path(__file__).resolve().parent.parent / "build" / "screenshots")
WIDTHS = (1280, 390)


def chromium_path() -> str | None:
    return os.environ.get("FLOWRAY_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright; .ci/run does)"
    if chromium_path() is None:
        return "no Chromium (apt-get install chromium; .ci/run does)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class PageErrors(list[str]):
    """What the page's own script got wrong (uncaught errors, console errors); the
    browser's own line for an answer that is not 2xx (a 401 when the sign-in page asks who
    is signed in, a 404 asked for on purpose) is kept out."""


@contextlib.contextmanager
def signed_in(browser: Any, url: str, token: str, *, width: int = 1280,
              **context_options: Any) -> Iterator[Any]:
    """A fresh browser context (its own cookies) at ``width`` px, signed in through the
    page's form; the page's errors are in ``page.errors`` and fail the test on the way
    out."""
    context = browser.new_context(viewport={"width": width, "height": 900},
                                  accept_downloads=True, **context_options)
    page = context.new_page()
    errors = PageErrors()
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    page.errors = errors
    try:
        page.goto(url + "/")
        page.get_by_label("Token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r"^(?!.*sign-in).*$"))
        page.get_by_role("navigation", name="Main").wait_for()
        yield page
        assert list(errors) == [], errors
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    """Keep a full-page screenshot named ``name-<width>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"]
    path = SCREENSHOTS / f"{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# Every control a person can reach has a name a screen reader can say.
UNNAMED_CONTROLS = """() => {
  const named = (el) => {
    if (el.getAttribute('aria-label')) return true;
    const by = el.getAttribute('aria-labelledby');
    if (by && by.split(' ').some((id) => (document.getElementById(id)?.textContent || '').trim()))
      return true;
    if (el.labels && [...el.labels].some((l) => l.textContent.trim())) return true;
    if (el.tagName !== 'INPUT' && el.textContent.trim()) return true;
    return Boolean(el.getAttribute('title'));
  };
  return [...document.querySelectorAll('a[href], button, input, select, textarea, [role=button], [contenteditable=true]')]
    .filter((el) => el.offsetParent !== null && el.type !== 'hidden' && !named(el))
    .map((el) => el.outerHTML.slice(0, 120));
}"""

# Nothing sticks out sideways: the page itself never scrolls horizontally (wide tables, the
# job graph and logs scroll inside their own boxes).
PAGE_OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"


class Relay:
    """A TCP relay in front of the service, whose ``drop()`` cuts every connection going
    through it at once, as a network that goes away does (the browser's offline mode leaves
    a localhost stream open)."""

    def __init__(self, port: int) -> None:
        import socket
        import threading

        self.target = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.links: list[Any] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import socket
        import threading

        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def drop(self) -> None:
        import socket

        with self.lock:
            links, self.links = self.links, []
        for link in links:
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                link.close()

    def close(self) -> None:
        self.closed = True
        self.server.close()
        self.drop()
