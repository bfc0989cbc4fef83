"""The search page in headless Chromium, on the seeds' site served by the app: Korean with
particles, English, mixed, an arXiv id, an author, nothing found, and a query holding HTML
shown as text. Skips only when Chromium is absent and NEWSLETTER_REQUIRE_SERVICES is unset.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import ROOT, SEEDS
from test_browser import _chromium
from test_browser_forms import Browser
from test_search_index import client_rank

from newsletter.archive.sources import local_catalog
from newsletter.config import Config, load_config
from newsletter.publish.manifest import Manifest
from newsletter.publish.outputs import SCRIPT, build_site
from newsletter.publish.render import LANGS, templates_dir
from newsletter.publish.search_index import refresh_index
from newsletter.publish.site import page_name, render_search
from newsletter.web.app import create_app


@contextlib.contextmanager
def served(cfg: Config, sock: socket.socket, profile: Path) -> Iterator[Browser]:
    """The app serving ``cfg``'s public folder on ``sock``, and a browser to read it."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(cfg), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    browser = Browser(_chromium(), profile)
    try:
        while not server.started:
            assert thread.is_alive(), "the test server did not start"
            threading.Event().wait(0.01)
        yield browser
    finally:
        browser.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def site_config(root: Path, digests: Path) -> tuple[Config, socket.socket, str]:
    """A configuration for ``digests`` whose site is at a loopback socket's address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    (root / "config.toml").write_text(f'source = "{digests}"\nbase_url = "{base}"\n', "utf-8")
    return load_config(root / "config.toml", env={"NEWSLETTER_SECRET_KEY": "k" * 40}), sock, base


def search_only(cfg: Config) -> int:
    """Of a site, only what search needs: the index of every day, the search page in each
    language and its script (no day or week pages); how many days it indexed."""
    catalog = local_catalog(cfg)
    days = sorted({day for entry in catalog.entries for day, papers in entry.days if papers})
    manifest = Manifest.load(cfg)
    refresh_index(catalog, manifest, days, lambda: False)
    manifest.save()
    for lang in LANGS:
        name = page_name("search", lang, cfg.default_lang)
        cfg.public_path.joinpath(name).write_text(render_search(cfg, lang), "utf-8")
    script = (templates_dir() / "site" / SCRIPT).read_bytes()
    cfg.public_path.joinpath(SCRIPT).write_bytes(script)
    return len(days)


@pytest.fixture(scope="module")
def searchable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Browser, Config]]:
    """The seeds' site, and a day after 2024-05-20 listing its papers again with one vote
    each, but for one new paper (2405.99999) in place of 2405.10370."""
    root = tmp_path_factory.mktemp("search")
    shutil.copytree(SEEDS, root / "digests")
    seed = next(p for p in SEEDS.iterdir() if "(2024-05-20)" in p.read_text("utf-8"))
    again = seed.read_text("utf-8").replace("2024-05-20", "2024-05-21")
    again = re.sub(r"^Vote: \d+$", "Vote: 1", again.replace("2405.10370", "2405.99999"), flags=re.M)
    (root / "digests" / "2024-05-21.md").write_text(again, "utf-8")
    cfg, sock, base = site_config(root, root / "digests")
    build_site(cfg, local_catalog(cfg), dt.date(2024, 8, 5))
    with served(cfg, sock, root / "profile") as browser:
        yield base, browser, cfg


def search(browser: Browser, url: str, query: str) -> dict[str, object]:
    """Open the search page for ``query`` and wait for its results."""
    browser.open(url + "?q=" + quote(query))
    for _ in range(300):
        if browser.run("document.getElementById('search-results').dataset.done") == query:
            break
        threading.Event().wait(0.05)
    else:
        raise AssertionError(f"no results shown for {query!r}")
    return search_state(browser)


def search_state(browser: Browser) -> dict[str, object]:
    """What the search page shows now."""
    script = """JSON.stringify({
      status: document.getElementById('search-status').textContent,
      ids: [...document.querySelectorAll('#search-list .links a[href*="arxiv.org"]')]
        .map(a => a.href.split('/abs/')[1]),
      marks: [...document.querySelectorAll('#search-list mark')].map(m => m.textContent),
      days: [...document.querySelectorAll('#search-list h2 a')].map(a => a.getAttribute('href')),
      markup: document.querySelectorAll('#search-results img, #search-results script, #search-results b').length,
      nojs: document.getElementById('search-nojs').hidden,
      more: document.getElementById('search-more').hidden,
      votes: [...document.querySelectorAll('#search-list .votes')].map(v => v.textContent),
    })"""
    return dict(json.loads(browser.run(script)))


def test_korean_english_mixed_id_and_author_queries(
    searchable: tuple[str, Browser, Config],
) -> None:
    base, browser, _cfg = searchable
    page = base + "search.html"
    found = search(browser, page, "가지치기")
    assert found["ids"] == ["2407.21018"] and found["nojs"] is True
    assert "가지치기" in found["marks"]  # inside 가지치기하는
    assert found["days"] == [base + "days/2024-07-31.html"]
    many = search(browser, page, "언어 모델")
    assert len(many["ids"]) >= 10 and {"언어", "모델"} <= set(many["marks"])  # type: ignore[arg-type]
    english = search(browser, page, "KV Cache")
    mixed = search(browser, page, "KV 캐시")
    assert "2407.21018" in english["ids"] and "2407.21018" in mixed["ids"]  # type: ignore[operator]
    assert search(browser, page, "2405.10725")["ids"] == ["2405.10725"]
    assert search(browser, page, "Trivedi")["ids"] == ["2405.10725"]
    in_english = search(browser, base + "search.en.html", "pruning")
    assert "2407.21018" in in_english["ids"]  # type: ignore[operator]
    assert all(str(d).endswith(".en.html") for d in in_english["days"])  # type: ignore[attr-defined]


def test_the_page_ranks_as_the_command_line_does_page_after_page(
    searchable: tuple[str, Browser, Config],
) -> None:
    from newsletter.app.search import find

    base, browser, cfg = searchable
    expected = [hit.entry.arxiv_id for hit in find(cfg, "모델", 1000)]
    assert len(expected) > 20  # more than one page
    first = search(browser, base + "search.html", "모델")
    assert first["ids"] == expected[:20] and first["more"] is False
    assert f"검색 결과 {len(expected)}건" in str(first["status"])  # each paper once
    browser.run("document.getElementById('search-more').click()")
    for _ in range(200):
        shown = search_state(browser)
        if len(shown["ids"]) > 20:  # type: ignore[arg-type]
            break
        threading.Event().wait(0.05)
    assert shown["ids"] == expected and shown["more"] is True


def test_a_paper_listed_on_two_days_is_shown_and_counted_once(
    searchable: tuple[str, Browser, Config],
) -> None:
    base, browser, _cfg = searchable
    once = search(browser, base + "search.en.html", "Trivedi")
    assert once["ids"] == ["2405.10725"] and once["status"] == "1 result for “Trivedi”"
    assert once["votes"] == ["6\xa0votes"]  # its best showing: 6 votes, not the later 1
    single = search(browser, base + "search.en.html", "2405.99999")
    assert single["votes"] == ["1\xa0vote"] and single["status"].startswith("1 result ")  # type: ignore[union-attr]
    assert search(browser, base + "search.html", "2405.99999")["votes"] == ["추천\xa01"]


def test_no_results_and_html_in_the_query_stays_text(
    searchable: tuple[str, Browser, Config],
) -> None:
    base, browser, _cfg = searchable
    nothing = search(browser, base + "search.html", "zzqxv 없는단어")
    assert nothing["ids"] == [] and "zzqxv 없는단어" in str(nothing["status"])
    hostile = '<img src=x onerror="document.title=1"><b>zzqxv</b>'
    shown = search(browser, base + "search.en.html", hostile)
    assert shown["ids"] == [] and hostile in str(shown["status"])
    assert shown["markup"] == 0
    assert browser.run("document.title") != "1"


def test_the_search_box_is_on_every_page_and_the_page_allows_only_its_script(
    searchable: tuple[str, Browser, Config],
) -> None:
    import httpx

    base, _browser, _cfg = searchable
    for path in ("", "days/2024-07-31.html", "issues/2024-W31.en.html"):
        html = httpx.get(base + path).text
        assert 'role="search"' in html and "search" in html, path
        assert "<script" not in html, path
    page = httpx.get(base + "search.html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    assert "script-src" not in httpx.get(base).headers["content-security-policy"]
    # Without JavaScript the page says so and links to the archive.
    assert "자바스크립트가 필요" in page.text and 'href="' + base + '#issues"' in page.text


def test_ten_years_of_digests(tmp_path: Path) -> None:
    """A synthetic ten-year archive (bench/synthetic.py, 16 papers a day), indexed as a
    build does but without its pages: the page finds what the index says it should."""
    sys.path.insert(0, str(ROOT / "bench"))
    import synthetic

    synthetic.write(tmp_path / "digests", 365 * 10)
    cfg, sock, base = site_config(tmp_path, tmp_path / "digests")
    assert search_only(cfg) == 3650
    public = cfg.public_path
    day = json.loads((public / "search/days/2029-02-14.json").read_text("utf-8"))
    with served(cfg, sock, tmp_path / "profile") as browser:
        for query in ("가지치기", "언어 모델", "KV cache", "Trivedi"):
            found = search(browser, base + "search.html", query)
            assert found["ids"] == client_rank(public, query, 20), query
            assert len(found["ids"]) == 20 and found["more"] is False, query  # type: ignore[arg-type]
        # 가지치기 inside 가지치기하는, the pairs of 언어 모델 across its particles.
        assert "가지치기" in search(browser, base + "search.html", "가지치기")["marks"]  # type: ignore[operator]
        found = search(browser, base + "search.en.html", day[3][0])
        assert found["ids"] == [day[3][0]] and found["days"] == [base + "days/2029-02-14.en.html"]
