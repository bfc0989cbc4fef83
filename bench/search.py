"""The search page on ten years of synthetic digests (bench/synthetic.py), in headless
Chromium: bytes transferred for the first query (nothing cached) and time to results for
the queries after it, with the CPU slowed fourfold as on a phone, side by side in one run.
Also how long the index takes to build whole, and again after one new day.

    .venv/bin/python bench/search.py [--years 10] [--folder DIR] [--script FILE ...]

--script measures other versions of the client (say one from `git show REV:templates/site/
search.js`) against the same index in the same run, each in turn.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import synthetic  # noqa: E402
from test_browser_forms import Browser  # noqa: E402
from test_browser_search import search_only, served, site_config  # noqa: E402

from newsletter.config import Config  # noqa: E402
from newsletter.publish.outputs import SCRIPT  # noqa: E402
from newsletter.publish.render import templates_dir  # noqa: E402

QUERIES = ("언어 모델", "가지치기", "KV 캐시", "multimodal reasoning", "2405.10725", "Trivedi")


def _index(cfg: Config) -> tuple[float, int]:
    started = time.perf_counter()
    days = search_only(cfg)
    return time.perf_counter() - started, days


def _wait(browser: Browser, query: str) -> float:
    for _ in range(1200):
        if browser.run("document.getElementById('search-results').dataset.done") == query:
            return float(browser.run("document.getElementById('search-results').dataset.ms"))
        time.sleep(0.05)
    raise RuntimeError(f"no results for {query!r}")


def _first_query(browser: Browser, base: str, query: str) -> tuple[int, int, float]:
    browser._call("Network.enable", session=True)
    browser._call("Network.setCacheDisabled", {"cacheDisabled": True}, session=True)
    browser.open(base + "search.html?q=" + quote(query))
    ms = _wait(browser, query)
    got = browser.run(
        "JSON.stringify(performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/search/')).map(e => e.transferSize))"
    )
    sizes = json.loads(got)
    browser._call("Network.setCacheDisabled", {"cacheDisabled": False}, session=True)
    return sum(sizes), len(sizes), ms


def _later(browser: Browser, query: str) -> float:
    browser.run(
        "document.getElementById('search-results').dataset.done = '\\0';"
        "document.getElementById('search-q').value = " + json.dumps(query) + ";"
        "document.getElementById('search-form').requestSubmit()"
    )
    return _wait(browser, query)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--script", type=Path, action="append", default=[])
    args = parser.parse_args()
    root = args.folder or Path(tempfile.mkdtemp(prefix="search-bench-"))
    digests = root / "digests"
    if not digests.exists():
        synthetic.write(digests, 365 * args.years)
    cfg, sock, base = site_config(root, digests)
    whole, days = _index(cfg)
    last = max(dt.date.fromisoformat(p.stem) for p in digests.glob("*.md"))
    new = last + dt.timedelta(days=1)
    text = (digests / f"{last}.md").read_text("utf-8").replace(str(last), str(new))
    (digests / f"{new}.md").write_text(text, "utf-8")
    one_day, _ = _index(cfg)
    files = list((cfg.public_path / "search").rglob("*.json"))
    print(
        f"archive: {days} days, index {sum(f.stat().st_size for f in files) / 1e6:.1f} MB "
        f"in {len(files)} files"
    )
    print(f"index build, archive read: whole {whole:.1f} s; after one new day {one_day:.1f} s")
    with served(cfg, sock, root / "profile") as browser:
        for script in [*args.script, templates_dir() / "site" / SCRIPT]:
            cfg.public_path.joinpath(SCRIPT).write_bytes(script.read_bytes())
            print(f"client: {script}")
            _queries(browser, base)


def _queries(browser: Browser, base: str) -> None:
    print(f"{'query':<22} {'first: KB':>9} {'files':>5} {'ms':>7}   {'then (CPU/4): ms':>16}")
    for query in QUERIES:
        size, count, first = _first_query(browser, base, query)
        browser._call("Emulation.setCPUThrottlingRate", {"rate": 4}, session=True)
        then = sorted(_later(browser, query) for _ in range(3))
        browser._call("Emulation.setCPUThrottlingRate", {"rate": 1}, session=True)
        print(f"{query:<22} {size / 1024:>9.1f} {count:>5} {first:>7.1f}   {then[1]:>16.1f}")


if __name__ == "__main__":
    main()
