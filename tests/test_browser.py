"""A real browser: headless Chromium lays the preview out at phone and desktop widths.

Skips only when Chromium is absent and NEWSLETTER_REQUIRE_SERVICES is unset (CI sets it).
Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from html import escape
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import SEEDS, long_week, make_paper

from newsletter.config import Config
from newsletter.mail.message import preferences_url, unsubscribe_url
from newsletter.models import Archive, Pick
from newsletter.publish import site
from newsletter.publish.render import LANGS, render_issue
from newsletter.select import IsoWeek, WeekIssue, build_issue, rank

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # No network: thumbnails stay blocked, as in a mail client that blocks images.
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
# Headless Chromium will not make a window narrower than 500px, so each page is laid out
# in an iframe of the width under test; srcdoc keeps it same-origin, so the outer page
# can measure it and write the figures into its DOM, read back with --dump-dom.
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" width="{width}" height="2400" style="border:0;display:block" srcdoc="{srcdoc}"></iframe>
<script>
document.getElementById('f').addEventListener('load', function () {{
  var w = this.contentWindow, d = this.contentDocument.documentElement;
  var p = document.createElement('div');
  var imgs = Array.prototype.slice.call(this.contentDocument.images);
  var tallest = imgs.reduce(function (m, i) {{ return Math.max(m, i.getBoundingClientRect().height); }}, 0);
  p.textContent = 'MEASURE ' + d.scrollWidth + ' ' + w.innerWidth + ' ' + imgs.length + ' ' + Math.round(tallest);
  document.body.appendChild(p);
}});
</script></body></html>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("NEWSLETTER_REQUIRE_SERVICES"):
            pytest.fail("chromium is required (NEWSLETTER_REQUIRE_SERVICES is set) but not found")
        pytest.skip("chromium is not installed")
    return found


def _run(browser: str, profile: Path, *args: str) -> str:
    result = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", "--window-size=800,2400", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _framed(html: str, width: int, path: Path) -> Path:
    path.write_text(FRAME.format(width=width, srcdoc=escape(html, quote=True)), encoding="utf-8")
    return path


def _measure(browser: str, page: Path, profile: Path) -> tuple[int, int, int, int]:
    """The page's scroll width, the frame's width, how many images it has and the height
    of the tallest (as laid out with images blocked)."""
    dom = _run(browser, profile, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    match = re.search(r"MEASURE (\d+) (\d+) (\d+) (\d+)", dom)
    assert match is not None, dom[-2000:]
    scroll, viewport, images, tallest = (int(g) for g in match.groups())
    return scroll, viewport, images, tallest


def _html(cfg: Config, archive: Archive, week: IsoWeek, lang: str) -> str:
    rendered = render_issue(cfg, build_issue(cfg, archive, week), lang)
    token = "preview-sample-token"
    return rendered.html_for(unsubscribe_url(cfg, token), preferences_url(cfg, token))


@pytest.mark.parametrize("width", [375, 640])
def test_preview_has_no_horizontal_scroll_and_no_empty_boxes(
    issue_cfg: Config, seeds_archive: Archive, tmp_path: Path, width: int
) -> None:
    browser = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    archive = long_week(10)
    pages = {
        "2024-W31.ko": _html(issue_cfg, seeds_archive, IsoWeek.parse("2024-W31"), "ko"),
        "2024-W05.en": _html(issue_cfg, seeds_archive, IsoWeek.parse("2024-W05"), "en"),
        "long.ko": _html(issue_cfg, archive, IsoWeek.of(archive.digests[0].date), "ko"),
    }
    for name, html in pages.items():
        page = _framed(html, width, tmp_path / f"{name}.{width}.html")
        scroll, viewport, images, tallest = _measure(browser, page, tmp_path / "profile")
        assert viewport == width, f"{name}: the frame is {viewport}px wide, not {width}px"
        assert scroll <= viewport, f"{name} at {width}px scrolls sideways ({scroll}px)"
        # Images off (as many work mail clients start): a blocked thumbnail leaves its short
        # alt text on one line, not a 289px empty box.
        if name != "long.ko":
            assert images > 0, name
        assert tallest <= 48, f"{name} at {width}px: a blocked image is {tallest}px tall"
        shot = ARTIFACTS / f"preview-{name}-{width}.png"
        _run(browser, tmp_path / "profile", f"--screenshot={shot}", page.as_uri())
        assert shot.stat().st_size > 10_000


# --- a paper's votes stay on one line at 375px -------------------------------------------------

# The page twice, side by side in same-origin frames: as rendered, and a control copy with the
# no-break spaces and nowrap rules taken out, which must break some votes (else the page
# never put a line end there, and the check would pass for nothing). For each "추천 53" /
# "53 votes" a Range over its text gives one box per line it is laid out on: boxes of one
# line overlap vertically, those of two lines do not.
VOTES_FRAMES = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="real" width="{width}" height="4000" style="border:0" srcdoc="{real}"></iframe>
<iframe id="control" width="{width}" height="4000" style="border:0" srcdoc="{control}"></iframe>
<script>
function votes(frame) {{
  var doc = frame.contentDocument, found = 0, broken = [];
  var pattern = /추천[ \u00a0][0-9,]+(?![0-9,위])|[0-9,]+[ \u00a0]votes?/g;
  var walker = doc.createTreeWalker(doc.body, NodeFilter.SHOW_TEXT), node, match;
  while ((node = walker.nextNode())) {{
    pattern.lastIndex = 0;
    while ((match = pattern.exec(node.data))) {{
      var range = doc.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      var boxes = Array.prototype.filter.call(range.getClientRects(), function (r) {{ return r.width > 0; }});
      var bottom = Math.min.apply(null, boxes.map(function (r) {{ return r.bottom; }}));
      var top = Math.max.apply(null, boxes.map(function (r) {{ return r.top; }}));
      found += 1;
      if (top >= bottom - 1) broken.push(match[0]);
    }}
  }}
  return found + ' ' + broken.length;
}}
window.addEventListener('load', function () {{
  var p = document.createElement('pre');
  p.textContent = 'VOTES ' + votes(document.getElementById('real')) + ' '
    + votes(document.getElementById('control'));
  document.body.appendChild(p);
}});
</script></body></html>"""


def _without_no_break(html: str) -> str:
    return html.replace("\u00a0", " ").replace("&nbsp;", " ").replace("white-space:nowrap;", "")


def _votes_on_one_line(browser: str, html: str, tmp: Path, name: str) -> None:
    page = tmp / f"{name}.votes.html"
    page.write_text(
        VOTES_FRAMES.format(
            width=375,
            real=escape(html, quote=True),
            control=escape(_without_no_break(html), quote=True),
        ),
        encoding="utf-8",
    )
    dom = _run(browser, tmp / "profile", "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    match = re.search(r"VOTES (\d+) (\d+) (\d+) (\d+)", dom)
    assert match is not None, dom[-2000:]
    found, broken, control_found, control_broken = map(int, match.groups())
    assert found >= 40 and control_found == found, (name, found, control_found)
    assert control_broken > 0, f"{name}: no votes at a line end, nothing was checked"
    assert broken == 0, f"{name} at 375px: {broken} of {found} votes broken across lines"


def _varied_titles(count: int = 40) -> list[str]:
    """Titles one character apart in length, so that at some of them the votes after the
    title fall at the end of a line, wherever the fonts put it."""
    return [f"Sparse Mixture of Experts for Long-Context Reasoning {'w' * i}" for i in range(count)]


def test_votes_stay_with_their_number_at_375px(issue_cfg: Config, tmp_path: Path) -> None:
    """The email's contents list and the front page's issue list, in both languages."""
    browser = _chromium()
    week = IsoWeek.parse("2024-W21")
    papers = [
        make_paper(f"2405.{10000 + i}", title=title, votes=120 + i)
        for i, title in enumerate(_varied_titles())
    ]
    picks = rank(Pick(p, week.monday, i, p.votes) for i, p in enumerate(papers))
    issue = WeekIssue(week, tuple(picks))
    entries = [
        site.IssueEntry(
            IsoWeek(2024, 1 + n),
            tuple(
                site.Lead(r + 1, p.paper.arxiv_id, p.paper.title, p.votes, "")
                for r, p in enumerate(picks[3 * n : 3 * n + 3])
            ),
        )
        for n in range(len(picks) // 3)
    ]
    for lang in LANGS:
        rendered = render_issue(issue_cfg, issue, lang)
        html = rendered.html_for(unsubscribe_url(issue_cfg, "t"), preferences_url(issue_cfg, "t"))
        _votes_on_one_line(browser, html, tmp_path, f"email.{lang}")
        index = site.render_index(issue_cfg, lang, entries[::-1], [dt.date(2024, 5, 20)])
        _votes_on_one_line(browser, index, tmp_path, f"index.{lang}")


# --- the website: every page at phone and desktop widths, and axe-core's WCAG A/AA rules ------

SITE_WIDTHS = (375, 1280)
# axe-core's rules for WCAG 2.0, 2.1 and 2.2, levels A and AA.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
# Run inside the page under test (a copy, in a same-origin frame: the site's CSP allows no
# script): measure the layout, run axe, and write both into the outer page for --dump-dom.
AXE_RUNNER = """<script src="{axe}"></script><script>
window.addEventListener('load', function () {{
  var d = document.documentElement, out = parent.document;
  function put(text) {{ var p = out.createElement('pre'); p.textContent = text; out.body.appendChild(p); }}
  put('MEASURE ' + d.scrollWidth + ' ' + window.innerWidth + ' ' + d.scrollHeight);
  axe.run(document, {{runOnly: {{type: 'tag', values: {tags}}}, resultTypes: ['violations']}})
    .then(function (r) {{
      put('AXE' + JSON.stringify(r.violations.map(function (v) {{
        return {{id: v.id, help: v.help, nodes: v.nodes.map(function (n) {{
          return {{target: n.target.join(' '), html: n.html, why: n.failureSummary}};
        }})}};
      }})) + 'AXE');
    }}, function (e) {{ put('AXEFAILED ' + e); }});
}});
</script>"""


def _axe_script() -> Path:
    """axe.min.js from the axe-playwright-python package (test dependency)."""
    import axe_playwright_python

    path = Path(axe_playwright_python.__file__).resolve().parent / "axe.min.js"
    assert path.is_file(), f"{path} is missing: reinstall requirements/test.txt"
    return path


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A plain PNG (a stand-in thumbnail): the screenshots show the layout with images."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + bytes(rgb) * width
    band = b"\x00" + bytes(c // 2 for c in rgb) * width
    rows = b"".join(band if height // 3 <= y < height // 3 + 12 else row for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def served_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The seeds' site, built and served on loopback: its base URL and every page's HTML,
    fetched over HTTP as a visitor gets it. Thumbnails point at stand-ins it serves."""
    import datetime as dt
    import socket
    import threading

    import httpx
    import uvicorn

    from newsletter.archive.sources import local_catalog
    from newsletter.config import load_config
    from newsletter.publish.outputs import publish_weeks
    from newsletter.web.app import create_app

    root = tmp_path_factory.mktemp("site")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    digests = root / "digests"
    digests.mkdir()
    for seed in sorted(SEEDS.iterdir()):
        text = seed.read_text(encoding="utf-8")
        text = text.replace(
            "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/", base + "thumbs/"
        )
        (digests / seed.name).write_text(text, encoding="utf-8")
    (root / "config.toml").write_text(
        f'source = "{digests}"\nbase_url = "{base}"\n', encoding="utf-8"
    )
    cfg = load_config(
        root / "config.toml", env={"NEWSLETTER_SECRET_KEY": "browser-test-key-of-at-least-32-bytes"}
    )
    publish_weeks(cfg, local_catalog(cfg), dt.date(2024, 8, 5))
    thumbs = cfg.public_path / "thumbs"
    thumbs.mkdir()
    colours = [(214, 226, 244), (248, 224, 196), (214, 238, 222), (236, 220, 242)]
    for i, seed in enumerate(sorted(digests.iterdir())):
        for arxiv_id in re.findall(r"thumbs/([\d.]+)\.png", seed.read_text(encoding="utf-8")):
            (thumbs / f"{arxiv_id}.png").write_bytes(_png(600, 315, colours[i % len(colours)]))
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the test server did not start"
            threading.Event().wait(0.01)
        with httpx.Client(base_url=base, timeout=10) as client:
            pages = {name: client.get(path).text for name, path in SITE_PAGES.items()}
            pages["subscribe-error"] = client.post(
                "subscribe?lang=ko",
                data={"email": "독자@example", "lang": "ko"},
                headers={"Origin": base.rstrip("/")},
            ).text
        yield base, pages
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


SITE_PAGES = {
    "index": "",
    "index.en": "index.en.html",
    "issue": "issues/2024-W31.html",
    "issue.en": "issues/2024-W31.en.html",
    "day": "days/2024-07-31.html",
    "day.en": "days/2024-07-31.en.html",
    "subscribe": "subscribe",
    "subscribe.en": "subscribe?lang=en",
    # Seen here without their results (the frame cannot read the index); the test of the
    # search page with its results checks them as served.
    "search": "search.html?q=%EB%AA%A8%EB%8D%B8",
    "search.en": "search.en.html?q=pruning",
    "not-found": "issues/2099-W01.html",
    "not-found.en": "no/such/page?lang=en",
    "confirm-invalid": "confirm/1.bad",
}
# Headless Chromium may load only the test server's stand-in thumbnails.
LOCAL_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


def _site_frame(html: str, width: int, height: int, path: Path) -> Path:
    frame = (
        '<!DOCTYPE html><html><body style="margin:0">'
        f'<iframe width="{width}" height="{height}" style="border:0;display:block" '
        f'srcdoc="{escape(html, quote=True)}"></iframe></body></html>'
    )
    path.write_text(frame, encoding="utf-8")
    return path


def _check_page(
    browser: str, name: str, html: str, width: int, tmp: Path, *, dark: bool = False
) -> None:
    import json

    profile = tmp / ("profile-dark" if dark else "profile")
    scheme = ["--force-dark-mode"] if dark else []
    runner = AXE_RUNNER.format(axe=_axe_script().as_uri(), tags=json.dumps(WCAG_TAGS))
    instrumented = html.replace("</body>", runner + "</body>")
    assert instrumented != html, f"{name}: no </body>"
    page = _site_frame(instrumented, width, 900, tmp / f"{name}.{width}.axe.html")
    window = f"--window-size={max(width, 500)},900"
    dom = subprocess.run(
        [
            browser,
            *FLAGS[:-1],
            *scheme,
            LOCAL_ONLY,
            f"--user-data-dir={profile}",
            window,
            "--virtual-time-budget=30000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    ).stdout
    measure = re.search(r"MEASURE (\d+) (\d+) (\d+)", dom)
    assert measure is not None, f"{name}: the page did not load\n{dom[-2000:]}"
    scroll, viewport, height = map(int, measure.groups())
    assert viewport == width, f"{name}: laid out {viewport}px wide, not {width}px"
    assert scroll <= viewport, f"{name} at {width}px scrolls sideways ({scroll}px)"
    found = re.search(
        r"AXE(\[.*?\])AXE",
        dom.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("&quot;", '"'),
        re.S,
    )
    assert found is not None, f"{name}: axe did not finish\n{dom[-2000:]}"
    violations = json.loads(found.group(1))
    report = [
        f"{v['id']} ({v['help']}): {n['target']}: {n['html'][:160]}\n    {n['why']}"
        for v in violations
        for n in v["nodes"]
    ]
    where = f"{name} at {width}px{' (dark)' if dark else ''}"
    assert not violations, f"{where} breaks WCAG A/AA rules:\n" + "\n".join(report)
    # The screenshot: the whole page, without the instrumentation.
    shot = ARTIFACTS / f"site-{name}-{width}{'-dark' if dark else ''}.png"
    height = min(height, 12000)
    frame = _site_frame(html, width, height, tmp / f"{name}.{width}.html")
    subprocess.run(
        [
            browser,
            *FLAGS[:-1],
            *scheme,
            LOCAL_ONLY,
            f"--user-data-dir={profile}",
            f"--window-size={max(width, 500)},{height}",
            "--virtual-time-budget=5000",
            f"--screenshot={shot}",
            frame.as_uri(),
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )
    assert shot.stat().st_size > 10_000, name


@pytest.mark.parametrize(
    ("width", "dark"), [*((width, False) for width in SITE_WIDTHS), (SITE_WIDTHS[0], True)]
)
def test_every_site_page_lays_out_and_passes_axe(
    served_site: tuple[str, dict[str, str]], tmp_path: Path, width: int, dark: bool
) -> None:
    """At each width, and at the narrowest in the dark color scheme too (its own colors)."""
    browser = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    _base, pages = served_site
    failures = []
    for name, html in pages.items():
        try:
            _check_page(browser, name, html, width, tmp_path, dark=dark)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures)


AXE_RUN = """axe.run(document, {runOnly: {type: 'tag', values: %s}, resultTypes: ['violations']})
  .then(function (r) { return JSON.stringify(r.violations.map(function (v) {
    return {id: v.id, help: v.help, nodes: v.nodes.map(function (n) { return n.target.join(' '); })};
  })); })"""


@pytest.mark.parametrize(
    ("width", "dark"), [*((width, False) for width in SITE_WIDTHS), (SITE_WIDTHS[0], True)]
)
def test_the_search_page_with_its_results_passes_axe(
    served_site: tuple[str, dict[str, str]], tmp_path: Path, width: int, dark: bool
) -> None:
    """The search page as a reader sees it: served over HTTP, its script reading the index,
    a page of results with highlighted snippets and the More button showing."""
    import json

    from test_browser_forms import Browser

    base, _pages = served_site
    browser = Browser(_chromium(), tmp_path / "profile")
    try:
        metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        browser._call("Emulation.setDeviceMetricsOverride", metrics, session=True)
        scheme = [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]
        browser._call("Emulation.setEmulatedMedia", {"features": scheme}, session=True)
        for page, query, least in (("search.html", "모델", 20), ("search.en.html", "KV cache", 1)):
            browser.open(f"{base}{page}?q={quote(query)}")
            for _ in range(300):
                if browser.run("document.getElementById('search-results').dataset.done") == query:
                    break
                threading.Event().wait(0.05)
            shown = browser.run("document.querySelectorAll('#search-list li').length")
            marks = browser.run("document.querySelectorAll('#search-list mark').length")
            assert shown >= least and marks > 0, f"{page}: {shown} results, {marks} marks"
            assert browser.run("document.documentElement.scrollWidth") <= width, page
            browser.run(_axe_script().read_text("utf-8"))
            violations = json.loads(browser.run(AXE_RUN % json.dumps(WCAG_TAGS), wait=True))
            assert violations == [], f"{page} at {width}px{' (dark)' if dark else ''}: {violations}"
        assert browser.run("document.getElementById('search-more').hidden") is True
    finally:
        browser.close()


def test_the_accessibility_check_reports_each_violation_with_its_rule_and_node(
    tmp_path: Path,
) -> None:
    """The check above passes only because axe ran and found nothing: a page with known
    faults fails it, naming each rule and element."""
    browser = _chromium()
    bad = (
        '<!DOCTYPE html><html lang="ko"><head><title>t</title></head><body><main>'
        '<img src="x.png"><p style="color:#bbb">흐린 글씨</p><a href="/x"></a></main></body></html>'
    )
    with pytest.raises(AssertionError) as failure:
        _check_page(browser, "faulty", bad, 375, tmp_path)
    message = str(failure.value)
    for rule, node in (("image-alt", "img"), ("color-contrast", "p"), ("link-name", "a")):
        assert f"{rule} (" in message and f": {node}: <{node}" in message, rule
