"""The console in a real browser: sign in, approve a draft, watch the send's counts move
without a reload, pause and resume it, export a filtered CSV, and axe-core on every page at
phone and desktop widths. Headless Chromium over the DevTools protocol, the app on a real
server, a real SMTP server receiving the issue. Skips only when Chromium is absent and
NEWSLETTER_REQUIRE_SERVICES is unset (CI sets it)."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import FaultySmtpHandler, smtp_cfg
from test_browser import AXE_RUN, WCAG_TAGS, _axe_script
from test_browser_forms import Browser, browser  # noqa: F401  (browser: the fixture)

from newsletter.app import admins
from newsletter.config import Config
from newsletter.mail.tokens import secret_key
from newsletter.service.processes import SenderThread
from newsletter.store import Store, open_store
from newsletter.web.app import create_app

PASSWORD = "correct horse battery staple"
WEEK = "2024-W05"
READERS = 150


@pytest.fixture
def console(
    cfg: Config,
    smtp_server: tuple[FaultySmtpHandler, int],
    live_server: Callable[..., str],
) -> Iterator[tuple[Config, Store, str, FaultySmtpHandler]]:
    """A site with a draft issue, 150 readers (a third in English) and an account, served
    with the process's sender, which sends at most 8 messages a second: slow enough to
    watch."""
    handler, port = smtp_server
    cfg = smtp_cfg(cfg, port, max_per_second=8.0, concurrency=2)
    store = open_store(cfg.database_url, cfg.base_dir)
    for n in range(READERS):
        store.add_subscriber(f"reader{n:03d}@example.org", f"독자 {n}", "en" if n % 3 else "ko")
    store.ensure_issue(WEEK, "draft", "draft")
    admins.add(store, "editor", PASSWORD)
    sender = SenderThread(cfg, store, secret_key(cfg)).start()
    base = live_server(build=lambda url: create_app(cfg.replace(base_url=url + "/"), sender.wake))
    try:
        yield cfg, store, base, handler
    finally:
        sender.stop()
        store.close()


def _sign_in(browser: Browser, base: str) -> None:  # noqa: F811
    browser.open(f"{base}/admin/")  # redirected to the login
    browser.run("document.getElementById('username').value = 'editor'")
    browser.run(f"document.getElementById('password').value = {json.dumps(PASSWORD)}")
    text = browser.press("main form button")
    assert "최신 호" in text or "Latest issue" in text, text


def _wait(browser: Browser, expression: str, timeout: float = 30.0) -> Any:  # noqa: F811
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.run(expression)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"never true: {expression}")


def _live(browser: Browser, key: str) -> int:  # noqa: F811
    text = browser.run(f"document.querySelector('[data-live={key}]').textContent")
    return int(str(text).replace(",", ""))


def test_approve_watch_pause_resume_and_export(
    console: tuple[Config, Store, str, FaultySmtpHandler],
    browser: Browser,  # noqa: F811
) -> None:
    _, store, base, handler = console
    _sign_in(browser, base)
    browser.open(f"{base}/admin/issues/{WEEK}")
    browser.press("form[action$='/approve'] button")
    row = store.get_issue(WEEK)
    assert row is not None and row.status in ("sending", "sent")
    # The dashboard follows the send without reloading: a mark left on the page stays.
    browser.open(f"{base}/admin/")
    browser.run("window.notReloaded = true")
    first = _live(browser, "sent")
    _wait(
        browser,
        f"Number(document.querySelector('[data-live=sent]').textContent.replace(/,/g, '')) > {first}",
    )
    assert browser.run("window.notReloaded") is True
    # Pause from the issue's page: the sender stops, and the dashboard says who paused it.
    browser.open(f"{base}/admin/issues/{WEEK}")
    text = browser.press("form[action$='/pause'] button")
    assert "일시 중지" in text or "Paused" in text
    row = store.get_issue(WEEK)
    assert row is not None and (row.status, row.paused_by) == ("paused", "operator")
    time.sleep(0.5)  # messages in flight land
    held = handler.counts()
    time.sleep(1.5)
    assert handler.counts() == held and sum(held.values()) < READERS
    # Resume: everything goes out, once each.
    browser.press("form[action$='/resume'] button")
    browser.open(f"{base}/admin/")
    _wait(browser, "document.querySelector('[data-live-issue]').dataset.state === 'sent'", 60)
    assert _live(browser, "sent") == READERS
    assert handler.counts() == {f"reader{n:03d}@example.org": 1 for n in range(READERS)}
    # A filtered CSV, fetched by the page with its own cookie.
    browser.open(f"{base}/admin/subscribers?language=en&state=active")
    href = browser.run("document.querySelector('a[download]').href")
    body = browser.run(f"fetch({json.dumps(href)}).then(r => r.text())", wait=True)
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == READERS - READERS // 3
    assert {r["lang"] for r in rows} == {"en"}


PAGES = (
    "",
    "issues",
    f"issues/{WEEK}",
    "subscribers",
    "subscribers?q=reader01",
    "bounces",
    "charts",
)


@pytest.mark.parametrize("width", [375, 1280])
def test_every_console_page_passes_axe(
    console: tuple[Config, Store, str, FaultySmtpHandler],
    browser: Browser,  # noqa: F811
    width: int,
) -> None:
    base = console[2]
    metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 500}
    browser._call("Emulation.setDeviceMetricsOverride", metrics, session=True)
    browser.open(f"{base}/admin/login")
    failures = [*_axe(browser, "login", width)]
    _sign_in(browser, base)
    for lang in ("ko", "en"):
        for page in PAGES:
            sep = "&" if "?" in page else "?"
            browser.open(f"{base}/admin/{page}{sep}lang={lang}")
            failures += _axe(browser, f"/admin/{page} ({lang})", width)
    assert not failures, "\n".join(failures)


def _axe(browser: Browser, name: str, width: int) -> list[str]:  # noqa: F811
    problems = []
    scroll = browser.run("document.documentElement.scrollWidth")
    if scroll > width:
        problems.append(f"{name} at {width}px scrolls sideways ({scroll}px)")
    browser.run(_axe_script().read_text("utf-8"))
    found = json.loads(browser.run(AXE_RUN % json.dumps(WCAG_TAGS), wait=True))
    if found:
        problems.append(f"{name} at {width}px: {found}")
    return problems
