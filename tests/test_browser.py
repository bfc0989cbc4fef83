"""A real browser: headless Chromium lays the preview out at phone and desktop widths.

Skips only when Chromium is absent and NEWSLETTER_REQUIRE_SERVICES is unset (CI sets it).
Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html import escape
from pathlib import Path

import pytest
from conftest import long_week

from newsletter.config import Config
from newsletter.message import preferences_url, unsubscribe_url
from newsletter.models import Archive
from newsletter.render import build_issue, render_issue
from newsletter.select import IsoWeek

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
