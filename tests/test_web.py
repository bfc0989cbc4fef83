"""The web app over real HTTP: a uvicorn server on loopback, requests with httpx."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from newsletter.config import Config
from newsletter.models import Archive
from newsletter.publish.feed import write_feeds
from newsletter.publish.issue_feed import write_issue_feeds
from newsletter.publish.names import ATOM_NAME, ISSUES_ATOM_NAME, ISSUES_JSON_NAME, JSON_NAME
from newsletter.web.app import CACHE_SECONDS, create_app

IDENTITY = {"Accept-Encoding": "identity"}


class Site:
    def __init__(self, cfg: Config, base: str) -> None:
        self.cfg = cfg
        self.base = base
        self.public = cfg.public_path

    def get(self, path: str, **headers: str) -> httpx.Response:
        return httpx.get(self.base + path, headers={**IDENTITY, **headers}, timeout=10)


@pytest.fixture
def site(cfg: Config, live_server: Callable[[Any], str]) -> Site:
    cfg = cfg.replace(base_url="https://example.org/newsletter/", tag_authority="example.org")
    return Site(cfg, live_server(create_app(cfg)))


@pytest.fixture
def built(site: Site, seeds_archive: Archive) -> Site:
    write_feeds(site.cfg.replace(feed_days=400), seeds_archive)
    write_issue_feeds(site.cfg, seeds_archive, dt.date(2024, 8, 5))
    return site


def test_feed_not_built_yet_is_a_clear_503(site: Site) -> None:
    for name in (ATOM_NAME, JSON_NAME, ISSUES_ATOM_NAME, ISSUES_JSON_NAME):
        response = site.get("/" + name)
        assert response.status_code == 503, response.text[-600:]
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "newsletter feed" in response.text
        assert response.headers["retry-after"] == "300"
        assert response.headers["cache-control"] == "no-store"


def test_atom_feed_with_validators(built: Site) -> None:
    response = built.get("/" + ATOM_NAME)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert response.content == (built.public / ATOM_NAME).read_bytes()
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    mtime = int((built.public / ATOM_NAME).stat().st_mtime)
    assert response.headers["last-modified"] == formatdate(mtime, usegmt=True)
    assert response.headers["cache-control"] == f"public, max-age={CACHE_SECONDS}"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_json_feed_content_type(built: Site) -> None:
    response = built.get("/" + JSON_NAME)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/feed+json; charset=utf-8"
    assert response.json()["items"]


def test_issues_feeds_content_types(built: Site) -> None:
    atom = built.get("/" + ISSUES_ATOM_NAME)
    assert atom.status_code == 200
    assert atom.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert atom.content == (built.public / ISSUES_ATOM_NAME).read_bytes()
    assert atom.headers["etag"] and atom.headers["x-content-type-options"] == "nosniff"
    feed = built.get("/" + ISSUES_JSON_NAME)
    assert feed.headers["content-type"] == "application/feed+json; charset=utf-8"
    assert feed.json()["items"][0]["url"] == "https://example.org/newsletter/issues/2024-W31.html"
    # Other JSON files stay plain JSON.
    (built.public / "other.json").write_text("{}", encoding="utf-8")
    assert built.get("/other.json").headers["content-type"] == "application/json; charset=utf-8"


def test_conditional_get_200_then_304(built: Site) -> None:
    first = built.get("/" + ATOM_NAME)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = built.get("/" + ATOM_NAME, **{"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == first.headers["cache-control"]
    assert built.get("/" + ATOM_NAME, **{"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert built.get("/" + ATOM_NAME, **{"If-Modified-Since": modified}).status_code == 304
    older = formatdate(int((built.public / ATOM_NAME).stat().st_mtime) - 60, usegmt=True)
    assert built.get("/" + ATOM_NAME, **{"If-Modified-Since": older}).status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    stale = {"If-None-Match": '"other"', "If-Modified-Since": modified}
    assert built.get("/" + ATOM_NAME, **stale).status_code == 200
    assert built.get("/" + ATOM_NAME, **{"If-Modified-Since": "yesterday"}).status_code == 200


def test_rebuild_keeps_etag_and_new_content_changes_it(built: Site, seeds_archive: Archive) -> None:
    etag = built.get("/" + ATOM_NAME).headers["etag"]
    write_feeds(built.cfg.replace(feed_days=400), seeds_archive)  # same input: untouched
    assert built.get("/" + ATOM_NAME, **{"If-None-Match": etag}).status_code == 304
    write_feeds(built.cfg.replace(feed_days=30), seeds_archive)  # fewer entries
    response = built.get("/" + ATOM_NAME, **{"If-None-Match": etag})
    assert response.status_code == 200
    assert response.headers["etag"] != etag
    assert response.content == (built.public / ATOM_NAME).read_bytes()


def test_gzip_for_clients_that_accept_it(built: Site) -> None:
    plain = built.get("/" + ATOM_NAME)
    with httpx.stream(
        "GET", built.base + "/" + ATOM_NAME, headers={"Accept-Encoding": "gzip"}
    ) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(raw) == plain.content
    assert len(raw) < len(plain.content) / 3
    gz_etag = response.headers["etag"]
    assert gz_etag != plain.headers["etag"]  # a strong ETag names one representation
    assert built.get("/" + ATOM_NAME, **{"If-None-Match": gz_etag}).status_code == 304
    refused = built.get("/" + ATOM_NAME, **{"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers
    assert refused.headers["vary"] == "Accept-Encoding"


def test_gzip_sends_the_copy_beside_a_feed_only_when_it_holds_the_feed(built: Site) -> None:
    """The feeds are written with a gzip copy beside them (for a web server in front); the
    app sends that copy rather than compressing the feed again, unless it is stale."""

    def sent() -> bytes:
        with httpx.stream(
            "GET", built.base + "/" + JSON_NAME, headers={"Accept-Encoding": "gzip"}
        ) as response:
            assert response.headers["content-encoding"] == "gzip"
            return b"".join(response.iter_raw())

    feed = built.public / JSON_NAME
    copy = feed.with_name(JSON_NAME + ".gz")
    assert gzip.decompress(copy.read_bytes()) == feed.read_bytes()
    assert sent() == copy.read_bytes()
    body = feed.read_bytes().replace(b"}", b" }", 1)  # the feed changes; the copy is stale
    feed.write_bytes(body)
    os.utime(feed, ns=(time.time_ns(), time.time_ns() + 10**9))
    raw = sent()
    assert raw != copy.read_bytes() and gzip.decompress(raw) == body
    copy.write_bytes(gzip.compress(body) + b"trailing bytes")  # not one gzip member
    os.utime(feed, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    raw = sent()
    assert raw != copy.read_bytes() and gzip.decompress(raw) == body


def test_head_has_headers_and_no_body(built: Site) -> None:
    response = httpx.head(built.base + "/" + ATOM_NAME, headers=IDENTITY)
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) == (built.public / ATOM_NAME).stat().st_size
    assert response.headers["etag"]


def test_index_and_issue_pages_are_html(site: Site) -> None:
    (site.public / "issues").mkdir(parents=True)
    (site.public / "index.html").write_text("<h1>목록</h1>", encoding="utf-8")
    (site.public / "issues" / "2024-W05.html").write_text("<h1>5주차</h1>", encoding="utf-8")
    index = site.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.text == "<h1>목록</h1>"
    issue = site.get("/issues/2024-W05.html")
    assert issue.headers["content-type"] == "text/html; charset=utf-8"
    assert issue.text == "<h1>5주차</h1>"
    etag = issue.headers["etag"]
    assert site.get("/issues/2024-W05.html", **{"If-None-Match": etag}).status_code == 304
    assert site.get("/issues/2024-W99.html").status_code == 404
    assert site.get("/issues/").status_code == 404


def _raw_get(base: str, target: str) -> tuple[int, bytes]:
    """A request with the target exactly as given: httpx would normalize ``..`` away."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_no_way_out_of_the_public_folder(site: Site, tmp_path: Path) -> None:
    site.public.mkdir(parents=True)
    secret = tmp_path / "secret.html"
    secret.write_text("SECRET", encoding="utf-8")
    (site.public / ".hidden.html").write_text("SECRET", encoding="utf-8")
    (site.public / "escape.html").symlink_to(secret)
    (site.public / "ok.html").write_text("ok", encoding="utf-8")
    for target in (
        "/../secret.html",
        "/%2e%2e/secret.html",
        "/issues/..%2f..%2fsecret.html",
        "/%2e%2e%2fsecret.html",
        "/..\\secret.html",
        "/.hidden.html",
        "/escape.html",
        "//etc/passwd",
        f"/{tmp_path}/secret.html",
        "/ok.html%00.html",
    ):
        status, body = _raw_get(site.base, target)
        assert status in (400, 404), target
        assert b"SECRET" not in body and b"root:" not in body, target
    assert _raw_get(site.base, "/ok.html")[0] == 200


def test_unknown_files_are_not_served(site: Site) -> None:
    site.public.mkdir(parents=True)
    (site.public / "notes.db").write_bytes(b"data")
    assert site.get("/notes.db").status_code == 404
    assert site.get("/nothing.html").status_code == 404


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_command_runs_the_app(tmp_path: Path, seeds_archive: Archive) -> None:
    config = tmp_path / "config.toml"
    config.write_text('public_dir = "www"\nfeed_days = 400\n', encoding="utf-8")
    cfg = Config(public_dir=tmp_path / "www", feed_days=400)
    write_feeds(cfg, seeds_archive)
    port = _free_port()
    env = {**os.environ, "NEWSLETTER_CONFIG": str(config)}
    command = [sys.executable, "-m", "newsletter.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}/{ATOM_NAME}"
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(url, headers=IDENTITY, timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "newsletter serve did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.content == (tmp_path / "www" / ATOM_NAME).read_bytes()
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()


# --- security ---------------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(built: Site) -> None:
    from newsletter.app.site import web_copy
    from newsletter.select import IsoWeek

    web_copy(built.cfg, IsoWeek(2024, 31))
    pages = {
        "/feed.atom": "other",
        "/feed.json": "other",
        "/": "page",
        "/issues/2024-W31.html": "page",
        "/days/2024-07-31.html": "page",
        "/favicon.svg": "other",
        "/robots.txt": "other",
        "/subscribe": "form",
        "/unsubscribe/1.bad": "form",
        "/no/such/page": "page",
    }
    for path, kind in pages.items():
        response = built.get(path)
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", path
        # Pages (each has the subscribe form) send referrers to this site only, or browsers
        # post their forms as Origin: null.
        referrers = "no-referrer" if kind == "other" else "same-origin"
        assert headers["referrer-policy"] == referrers, path
        assert headers["x-frame-options"] == "DENY", path
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, path
        assert "script" not in csp, path  # no script may run anywhere
        if kind == "other":
            assert "sandbox" in csp, path
        else:
            assert "form-action 'self'" in csp, path
        if kind == "form":
            assert "img-src 'self' data:" in csp, path  # no third-party images on forms
        assert "<script" not in response.text.lower(), path


def test_the_listening_socket_of_run_answers_keep_alive_without_delay() -> None:
    """Nagle's algorithm held every answer after the first on a keep-alive connection for
    ~40 ms: accepted sockets must inherit TCP_NODELAY from the listening one."""
    from newsletter.service.processes import _bind, _listen

    listener = _listen(_bind("127.0.0.1", 0))
    try:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        listener.close()


def test_a_full_disk_answers_a_friendly_503(
    cfg: Config, live_server: Callable[[Any], str], tmp_path: Path
) -> None:
    from conftest import need_service

    from newsletter.store import open_store

    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        need_service("a tmpfs mount", mounted.stderr.decode(errors="replace").strip())
    try:
        cfg = cfg.replace(database_url=f"sqlite:///{disk / 'newsletter.db'}", secret_key="k" * 40)
        open_store(cfg.database_url, cfg.base_dir).close()
        with (disk / "filler").open("wb") as fh:  # fill what is left
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        with httpx.Client(base_url=live_server(create_app(cfg))) as client:
            response = (
                client.post("/subscribe", data={"email": f"x{i}@example.org"})
                if (i := 0) == 0
                else None
            )
        assert response is not None
        assert response.status_code == 503, response.text[-600:]
        assert response.headers["retry-after"] == "300"
        assert "잃어버린 것은 없으니" in response.text
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# --- the site's own answers: 404, robots.txt, favicon ------------------------------------------


def test_an_unknown_address_gets_the_sites_404_page_with_a_way_home(site: Site) -> None:
    site.public.mkdir(parents=True)
    response = site.get("/issues/2024-W99.html")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert '<html lang="ko">' in page and "페이지를 찾을 수 없습니다" in page
    assert f'<a class="more" href="{site.cfg.site_url}">' in page
    assert f'href="{site.cfg.site_url}feed.atom"' in page  # the site's layout, feeds and all
    assert 'href="?lang=en"' in page  # the switch
    english = site.get("/issues/2024-W99.en.html").text
    assert '<html lang="en">' in english and "Page not found" in english
    assert f'href="{site.cfg.site_url}index.en.html"' in english
    assert '<html lang="en">' in site.get("/nothing?lang=en").text
    # The browser's language is not the site's.
    assert '<html lang="ko">' in site.get("/nothing", **{"Accept-Language": "en-US,en"}).text


def test_robots_txt_and_favicons_are_served_with_validators(site: Site) -> None:
    robots = site.get("/robots.txt")
    assert robots.status_code == 200
    assert robots.headers["content-type"] == "text/plain; charset=utf-8"
    assert "Disallow: /newsletter/unsubscribe/" in robots.text
    for path, media_type in (("/favicon.svg", "image/svg+xml"), ("/favicon.ico", "image/x-icon")):
        response = site.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == media_type
        assert response.headers["cache-control"] == "public, max-age=86400"
        etag = response.headers["etag"]
        assert site.get(path, **{"If-None-Match": etag}).status_code == 304
    assert site.get("/favicon.svg").content.startswith(b"<svg")
    assert site.get("/favicon.ico").content[:4] == b"\x00\x00\x01\x00"


# --- a start's build in progress: 503 for the pages still to come, never 404 ------------------


def _building(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text[-300:]
    assert response.headers["retry-after"] == "5"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "text/html; charset=utf-8"


def test_pages_still_to_be_built_answer_503_with_retry_after(
    cfg: Config, live_server: Callable[..., str]
) -> None:
    from newsletter.publish.pending import PendingPages

    pending = PendingPages()
    site = Site(cfg, live_server(create_app(cfg, pending=pending)))
    site.public.mkdir(parents=True)
    (site.public / "days").mkdir()
    (site.public / "days" / "2024-05-20.html").write_text("<p>old</p>", encoding="utf-8")
    assert site.get("/").status_code == 404  # no build: nothing is coming

    # Started, not planned yet: any missing page of the site's kinds is coming.
    pending.start(stale=False)
    home = site.get("/")
    _building(home)
    assert '<html lang="ko">' in home.text and "페이지를 만드는 중입니다" in home.text
    english = site.get("/days/2024-07-31.en.html")
    _building(english)
    assert '<html lang="en">' in english.text and "This page is being built" in english.text
    assert site.get("/days/2024-05-20.html").text == "<p>old</p>"
    assert site.get("/nothing.html").status_code == 404
    for coming in ("/search.html", "/search.en.html", "/search.js", "/search/index.json"):
        _building(site.get(coming))

    # Planned: exactly the pages the build writes that are missing.
    pending.plan(
        ["index.html", "days/2024-05-20.html", "days/2024-07-31.html"],
        lambda name: (site.public / name).exists(),
    )
    _building(site.get("/days/2024-07-31.html"))
    assert site.get("/days/2024-07-31.en.html").status_code == 404  # not in this build
    assert site.get("/days/2024-05-20.html").status_code == 200
    (site.public / "index.html").write_text("<p>home</p>", encoding="utf-8")
    pending.done("index.html")
    assert site.get("/").text == "<p>home</p>"
    pending.finish()
    assert site.get("/days/2024-07-31.html").status_code == 404

    # Links changed (another port): the pages there link elsewhere until rewritten.
    pending.start(stale=True)
    _building(site.get("/"))
    pending.plan(["index.html", "days/2024-05-20.html"], lambda name: True)
    _building(site.get("/days/2024-05-20.html"))
    pending.done("days/2024-05-20.html")
    assert site.get("/days/2024-05-20.html").status_code == 200
    pending.finish()
    assert site.get("/").status_code == 200


def test_a_cold_build_answers_its_pages_503_until_written_and_the_front_page_first(
    cfg: Config, live_server: Callable[..., str]
) -> None:
    """Watched between two pages of a first build (the build asks its stop flag there):
    the front page and the feeds come first, and a page still to come is never a 404."""
    from newsletter.archive.sources import local_catalog
    from newsletter.publish import outputs
    from newsletter.publish.pending import PendingPages

    pending = PendingPages()
    site = Site(cfg, live_server(create_app(cfg, pending=pending)))
    pending.start(stale=True)
    _building(site.get("/"))
    seen: list[tuple[int, int, int]] = []

    class Watch:
        def is_set(self) -> bool:
            written = {str(p.relative_to(site.public)) for p in site.public.rglob("*.html")}
            week = site.get("/issues/2024-W31.html")
            day = site.get("/days/2024-07-31.html")
            for answer, name in ((week, "issues/2024-W31.html"), (day, "days/2024-07-31.html")):
                if name not in written:
                    _building(answer)
            if "index.html" in written:
                assert site.get("/issues.atom").status_code == 200
            else:
                _building(site.get("/"))
            seen.append((site.get("/").status_code, week.status_code, day.status_code))
            return False

    catalog = local_catalog(cfg)
    outputs.refresh_feeds(cfg, catalog)
    outputs.publish_weeks(cfg, catalog, dt.date(2024, 8, 5), stop=Watch(), pending=pending)
    assert (200, 503, 503) in seen  # the front page was there before the pages it links to
    assert not pending.building
    for path in ("/", "/issues/2024-W31.html", "/days/2024-07-31.html", "/issues.atom"):
        assert site.get(path).status_code == 200, path
    assert site.get("/days/2024-07-30.html").status_code == 404
