"""The site's forms pressed in a real browser: headless Chromium, driven over the DevTools
protocol, against the app on a real server.

A browser sends headers no HTTP client in the other tests sends (Origin, and Referer as
the page's Referrer-Policy allows), and the forms' same-origin check reads them: only a
browser shows whether a reader's own button press gets through. Skips only when
Chromium is absent and NEWSLETTER_REQUIRE_SERVICES is unset (CI sets it).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_subscription import KEY, _outbox, web  # noqa: F401  (web: the fixture)

from newsletter.config import Config
from newsletter.mail.tokens import PREFERENCES, make_token
from newsletter.store import Store

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Browser:
    """One headless Chromium tab, driven over ``--remote-debugging-pipe`` (the DevTools
    protocol as NUL-separated JSON on file descriptors 3 and 4: no WebSocket needed)."""

    def __init__(self, binary: str, profile: Path) -> None:
        child_in, self._out = os.pipe()
        self._in, child_out = os.pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, fd 4 answers
            commands, answers = os.dup(child_in), os.dup(child_out)
            os.dup2(commands, 3)
            os.dup2(answers, 4)

        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
            preexec_fn=wire,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._last_id = 0
        self._events: list[dict[str, Any]] = []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self._call("Page.enable", session=True)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._in, 65536)
            if not chunk:
                raise EOFError("Chromium exited")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def _call(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = False
    ) -> Any:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self._events.append(answer)

    def _loaded(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            while self._events:
                if self._events.pop(0).get("method") == "Page.loadEventFired":
                    return
            self._events.append(self._read(deadline))

    def run(self, expression: str, *, wait: bool = False) -> Any:
        """Evaluate JavaScript in the page (DevTools is not bound by the page's CSP); with
        ``wait``, the value the promise it gives settles to."""
        answer = self._call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": wait},
            session=True,
        )
        return answer["result"].get("value")

    def open(self, url: str) -> str:
        """Load ``url``; the page's text."""
        self._events.clear()
        self._call("Page.navigate", {"url": url}, session=True)
        self._loaded()
        return str(self.run("document.body.innerText"))

    def press(self, selector: str) -> str:
        """Click the button ``selector`` as a reader would; the text of the page it leads to."""
        self._events.clear()
        self.run(f"document.querySelector({json.dumps(selector)}).click()")
        self._loaded()
        return str(self.run("document.body.innerText"))

    def close(self) -> None:
        try:
            self._call("Browser.close")
        except (OSError, RuntimeError, TimeoutError, EOFError):
            self.process.kill()
        self.process.wait(timeout=30)
        os.close(self._in)
        os.close(self._out)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("NEWSLETTER_REQUIRE_SERVICES"):
            pytest.fail("chromium is required (NEWSLETTER_REQUIRE_SERVICES is set) but not found")
        pytest.skip("chromium is not installed")
    tab = Browser(found, tmp_path / "profile")
    try:
        yield tab
    finally:
        tab.close()


def test_subscribe_confirm_and_unsubscribe_by_the_pages_own_buttons(
    web: tuple[Config, Store, httpx.Client],  # noqa: F811
    browser: Browser,
) -> None:
    """Each page's button gets through the same-origin check: a page sent with
    ``Referrer-Policy: no-referrer`` makes the browser post ``Origin: null``, which the
    check must refuse (a sandboxed frame on any site posts that too)."""
    cfg, store, client = web
    base = str(client.base_url).rstrip("/")
    browser.open(f"{base}/subscribe")
    browser.run("document.getElementById('email').value = 'reader@example.org'")
    browser.run("document.getElementById('lang').value = 'ko'")
    assert "확인 링크를 보냈습니다" in browser.press("main form button")
    (mail,) = _outbox(cfg)
    link = re.search(r"/confirm/\S+", mail.get_content())
    assert link is not None
    assert "r***@example.org" in browser.open(base + link.group(0))
    assert "구독이 확인되었습니다" in browser.press("main form button")
    sub = store.get_subscriber(email="reader@example.org")
    assert sub is not None and sub.status == "active"
    browser.open(f"{base}/unsubscribe/{make_token(KEY, 'unsubscribe', sub.id)}")
    assert "구독이 해지되었습니다" in browser.press("main form button")
    assert store.get_subscriber(id=sub.id).status == "unsubscribed"  # type: ignore[union-attr]


def test_the_front_pages_subscribe_form_gets_through(
    web: tuple[Config, Store, httpx.Client],  # noqa: F811
    browser: Browser,
) -> None:
    """Every public page carries the subscribe form: a page sent with no-referrer would
    make the browser post ``Origin: null``, and the subscription would be refused."""
    import datetime as dt

    from newsletter.app.site import build

    cfg, store, client = web
    base = str(client.base_url).rstrip("/")
    # The pages' form posts to the site's own address: here, the test server's.
    build(cfg.replace(base_url=f"{base}/"), today=dt.date(2024, 8, 5))
    browser.open(f"{base}/")
    browser.run("document.getElementById('subscribe-email').value = 'front@example.org'")
    assert "확인 링크를 보냈습니다" in browser.press("main form button")
    sub = store.get_subscriber(email="front@example.org")
    assert sub is not None and sub.status == "pending"


def test_the_preferences_page_changes_the_language_then_unsubscribes(
    web: tuple[Config, Store, httpx.Client],  # noqa: F811
    browser: Browser,
) -> None:
    _cfg, store, client = web
    sub, _ = store.add_subscriber("reader@example.org", "", "ko")
    page = f"{str(client.base_url).rstrip('/')}/preferences/{make_token(KEY, PREFERENCES, sub.id)}"
    assert "r***@example.org 주소의 구독 설정" in browser.open(page)
    browser.run("document.getElementById('lang').value = 'en'")
    saved = browser.press("main form button")
    assert "Saved: from the next issue on, the newsletter comes in English." in saved
    assert browser.run("document.documentElement.lang") == "en"
    assert store.get_subscriber(id=sub.id).lang == "en"  # type: ignore[union-attr]
    left = browser.press("form:nth-of-type(2) button")
    assert "You are unsubscribed and will receive no more issues." in left
    assert store.get_subscriber(id=sub.id).status == "unsubscribed"  # type: ignore[union-attr]
