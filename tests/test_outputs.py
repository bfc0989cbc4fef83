"""Incremental outputs: nothing is rendered or rewritten while its inputs stay the same;
a template or a setting change renders again exactly what it touches."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SEEDS

from newsletter.archive.sources import local_catalog
from newsletter.config import Config, load_config
from newsletter.publish import outputs, render

TODAY = dt.date(2024, 8, 5)  # after the seeds' last week


def _cfg(tmp_path: Path, text: str = "") -> Config:
    path = tmp_path / "config.toml"
    path.write_text(f'source = "{SEEDS}"\n{text}', encoding="utf-8")
    return load_config(path, env={})


def _refresh(cfg: Config) -> None:
    outputs.build_site(cfg, local_catalog(cfg), TODAY)


def _state(cfg: Config) -> dict[str, tuple[bytes, int]]:
    """Every public file's bytes and mtime; not the feeds' gzip copies, which follow their
    feeds (tests/test_feed.py)."""
    return {
        str(p.relative_to(cfg.public_path)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(cfg.public_path.rglob("*"))
        if p.is_file() and p.suffix != ".gz"
    }


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the templates that a test may edit."""
    folder = tmp_path / "templates"
    shutil.copytree(render.templates_dir(), folder)
    monkeypatch.setattr(render, "templates_dir", lambda: folder)
    render.environment.cache_clear()
    yield folder
    render.environment.cache_clear()


def test_nothing_is_rewritten_when_nothing_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path)
    _refresh(cfg)
    before = _state(cfg)
    assert {"feed.atom", "feed.json", "index.html", "issues/2024-W31.html"} <= set(before)
    assert {"issues.atom", "issues.json"} <= set(before)
    assert "issues/2024-W31.en.html" in before

    rendered: list[object] = []
    original = render.render_issue
    monkeypatch.setattr(
        render, "render_issue", lambda *a, **k: rendered.append(a) or original(*a, **k)
    )
    _refresh(cfg)
    assert _state(cfg) == before
    assert rendered == []


def test_a_deleted_page_is_written_again(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _refresh(cfg)
    before = _state(cfg)
    (cfg.public_path / "issues" / "2024-W31.html").unlink()
    _refresh(cfg)
    after = _state(cfg)
    assert after.keys() == before.keys()
    assert after["issues/2024-W31.html"][0] == before["issues/2024-W31.html"][0]
    others = [n for n in before if n.startswith("issues/2024-W0")]
    assert others and all(after[n] == before[n] for n in others)


def test_a_template_change_renders_the_pages_again(tmp_path: Path, templates: Path) -> None:
    cfg = _cfg(tmp_path)
    _refresh(cfg)
    before = _state(cfg)
    layout = templates / "site" / "base.html"
    layout.write_text(
        layout.read_text(encoding="utf-8").replace("</body>", "<p>changed</p></body>"),
        encoding="utf-8",
    )
    _refresh(cfg)
    after = _state(cfg)
    for name in before:
        if name.endswith(".html"):
            assert after[name] != before[name] and b"changed" in after[name][0], name
    # The feeds use no email template: untouched, their mtimes (and ETags) held.
    for name in ("feed.atom", "feed.json", "issues.atom", "issues.json"):
        assert after[name] == before[name], name

    entry = templates / "feed" / "issue.html"
    entry.write_text(entry.read_text(encoding="utf-8") + "<p>changed</p>\n", encoding="utf-8")
    _refresh(cfg)
    last = _state(cfg)
    assert {n for n in last if last[n] != after[n]} == {"issues.atom", "issues.json"}
    assert b"changed" in last["issues.atom"][0]


def test_the_feed_language_renders_the_feeds_again(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _refresh(cfg)
    before = _state(cfg)
    english = _cfg(tmp_path, 'language = "en"\n')
    _refresh(english)
    after = _state(english)
    assert {n for n in after if after[n] != before[n]} == {
        "feed.atom",
        "feed.json",
        "issues.atom",
        "issues.json",
    }
    assert b"What&#39;s New" in after["feed.atom"][0]
    assert b"issues/2024-W31.en.html" in after["issues.atom"][0]


def test_a_setting_change_renders_only_what_uses_it(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _refresh(cfg)
    before = _state(cfg)

    intro = _cfg(tmp_path, '[email]\nintro = "새로운 소개 문구"\n')
    _refresh(intro)
    after = _state(intro)
    assert after["feed.atom"] == before["feed.atom"]
    korean = [n for n in after if n.startswith("issues/") and not n.endswith(".en.html")]
    assert korean and all("새로운 소개 문구" in after[n][0].decode() for n in korean)
    # The English edition has an intro of its own ([email.en]): its pages stay as they were.
    english = [n for n in after if n.endswith(".en.html")]
    assert english and all(after[n] == before[n] for n in english)

    retitled = _cfg(tmp_path, 'site_title = "새 제목"\n[email]\nintro = "새로운 소개 문구"\n')
    _refresh(retitled)
    last = _state(retitled)
    assert "새 제목" in last["feed.atom"][0].decode()
    assert {n for n in last if last[n] != after[n]} == {"feed.atom", "feed.json"}


def test_a_changed_digest_renders_its_week_only(tmp_path: Path) -> None:
    folder = tmp_path / "digests"
    shutil.copytree(SEEDS, folder)
    cfg = load_config(_cfg(tmp_path).base_dir / "config.toml", env={}).replace(source=str(folder))
    _refresh(cfg)
    before = _state(cfg)
    # Every file of the seeds holds one week; change a vote in the last one.
    last = sorted(folder.iterdir())[-1]
    text = last.read_text(encoding="utf-8")
    votes = text.index("Vote: ") + len("Vote: ")
    end = text.index("\n", votes)
    last.write_text(text[:votes] + "99999" + text[end:], encoding="utf-8")
    _refresh(cfg)
    after = _state(cfg)
    changed = {n for n in after if after[n] != before[n]}
    assert changed and all(
        n.startswith(("issues/", "issues.", "days/", "feed.", "index", "search/")) for n in changed
    )
    # The search index: the changed day's file and its year's segment, not the other days.
    assert "search/2024/docs.json" in changed
    assert [n for n in changed if n.startswith("search/days/")] == [
        f"search/days/{n.split('/')[-1].split('.')[0]}.json"
        for n in changed
        if n.startswith("days/") and n.endswith(".html") and n.count(".") == 1
    ]
    assert {"issues.atom", "issues.json"} <= changed  # the week is in the issues feed
    assert "issues/2024-W21.html" in before and "issues/2024-W21.html" not in changed
    # The changed day's page and its week's; other days are untouched.
    assert {"days/2024-07-31.html", "issues/2024-W31.html", "index.html"} <= changed
    assert "days/2024-05-20.html" not in changed


def test_the_feeds_from_the_cache_are_the_feeds_of_the_whole_archive(tmp_path: Path) -> None:
    """Only the earlier days sharing a paper with the window are read for the feeds: the
    bytes are those of the feeds built from every digest in full."""
    from newsletter.archive.digest import load_archive
    from newsletter.publish.feed import write_feeds

    folder = tmp_path / "digests"
    folder.mkdir()
    day = """## Daily Papers ({date})

### [{title}](https://arxiv.org/abs/{arxiv_id})
Vote: {votes}
- A point.
"""
    start = dt.date(2024, 1, 1)
    for n in range(90):
        date = start + dt.timedelta(days=n)
        text = day.format(date=date, title=f"Paper {n}", arxiv_id=f"2401.{n:05d}", votes=n)
        if n in (70, 85):
            # A paper of January 2024 again, and one first seen (but never on top) earlier.
            text += day.format(date=date, title="Old", arxiv_id="2401.00003", votes=500)[27:]
            text += day.format(date=date, title="Low", arxiv_id="2401.99999", votes=900)[27:]
        if n == 5:
            text += day.format(date=date, title="Low", arxiv_id="2401.99999", votes=0)[27:]
        (folder / f"{date}.md").write_text(text, encoding="utf-8")
    _cfg(tmp_path, "feed_days = 30\ntop_n_daily = 1\n")
    cfg = load_config(tmp_path / "config.toml", env={}, overrides={"source": str(folder)})
    outputs.refresh_feeds(cfg, local_catalog(cfg))
    built = {n: (cfg.public_path / n).read_bytes() for n in ("feed.atom", "feed.json")}
    whole = tmp_path / "whole"
    whole.mkdir()
    write_feeds(cfg, load_archive(folder), whole)
    assert built == {n: (whole / n).read_bytes() for n in built}
    assert b"2401.99999" in built["feed.atom"] and b"2401.00003" not in built["feed.atom"]


def test_a_new_sender_address_reaches_every_pages_contact_line(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _refresh(cfg)
    moved = _cfg(tmp_path, '[email]\nfrom_address = "weekly@papers.example.org"\n')
    _refresh(moved)
    after = _state(moved)
    pages = [n for n in after if n.endswith(".html")]
    assert pages and all(b"weekly@papers.example.org" in after[n][0] for n in pages)


def test_pages_of_days_the_archive_no_longer_holds_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "digests"
    shutil.copytree(SEEDS, folder)
    cfg = load_config(_cfg(tmp_path).base_dir / "config.toml", env={}).replace(source=str(folder))
    _refresh(cfg)
    mine = cfg.public_path / "issues" / "README.txt"  # not a page of the build's
    mine.write_text("kept\n", encoding="utf-8")
    before = _state(cfg)
    assert "days/2024-01-02.html" in before and "issues/2024-W01.en.html" in before

    # A folder that cannot be read for a moment takes no page with it.
    folder.rename(tmp_path / "away")
    _refresh(cfg)
    assert {n for n in before if n.startswith(("days/", "issues/"))} <= set(_state(cfg))
    (tmp_path / "away").rename(folder)

    (next(p for p in folder.iterdir() if b"(2024-01-02)" in p.read_bytes())).unlink()
    _refresh(cfg)
    after = _state(cfg)
    assert not [n for n in after if "2024-01-02" in n or "2024-W01" in n]
    assert "days/2024-02-02.html" in after and "issues/README.txt" in after
    assert b"2024-W01" not in after["index.html"][0]
    # What the manifest knew of them is gone too: a build with nothing new renders nothing.
    manifest = outputs.Manifest.load(cfg)
    assert not [n for n in manifest.entries if "2024-01-02" in n or "2024-W01" in n]
    assert "2024-W01" not in manifest.leads
    _refresh(cfg)
    assert _state(cfg) == after


def test_the_manifest_knows_whether_the_outputs_link_to_this_address(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert outputs.Manifest.load(cfg).stale(outputs.FEEDS)  # nothing built yet
    assert outputs.Manifest.load(cfg).stale(outputs.PAGES)
    _refresh(cfg)
    built = outputs.Manifest.load(cfg)
    assert not built.stale(outputs.FEEDS) and not built.stale(outputs.PAGES)
    elsewhere = cfg.replace(web=dataclasses.replace(cfg.web, port=18555))
    moved = outputs.Manifest.load(elsewhere)
    assert moved.stale(outputs.FEEDS) and moved.stale(outputs.PAGES)
    # The daily feeds alone, rewritten for the other address: the pages still link to the
    # first, and the feeds no longer do.
    outputs.refresh_feeds(elsewhere, local_catalog(elsewhere))
    assert not outputs.Manifest.load(elsewhere).stale(outputs.FEEDS)
    assert outputs.Manifest.load(elsewhere).stale(outputs.PAGES)
    assert outputs.Manifest.load(cfg).stale(outputs.FEEDS)
    # A pass stopped half-way leaves the pages mixed: stale for either address.
    stop_at = iter([False, False, True])

    class Halfway:
        def is_set(self) -> bool:
            return next(stop_at, True)

    outputs.publish_weeks(elsewhere, local_catalog(elsewhere), TODAY, stop=Halfway())
    assert outputs.Manifest.load(elsewhere).stale(outputs.PAGES)
    assert outputs.Manifest.load(cfg).stale(outputs.PAGES)
    outputs.build_site(elsewhere, local_catalog(elsewhere), TODAY)
    assert not outputs.Manifest.load(elsewhere).stale(outputs.PAGES)
    pages = list(cfg.public_path.rglob("*.html"))
    assert pages and all(
        "http://127.0.0.1:8000/" not in p.read_text(encoding="utf-8") for p in pages
    )


def test_a_build_tells_how_far_it_is_in_pages_and_a_stop_keeps_what_is_done(
    tmp_path: Path,
) -> None:
    import threading

    cfg = _cfg(tmp_path)
    told: list[tuple[int, int]] = []
    built = outputs.build_site(cfg, local_catalog(cfg), TODAY, progress=lambda *a: told.append(a))
    pages = len(built.pages)
    # Known before the first page: every page rendered, counted up to the end.
    assert pages > 4 and told[0] == (0, pages) and told[-1] == (pages, pages)
    assert [total for _, total in told] == [pages] * len(told)
    assert [done for done, _ in told] == sorted(done for done, _ in told)

    told.clear()
    again = outputs.build_site(cfg, local_catalog(cfg), TODAY, progress=lambda *a: told.append(a))
    assert again.pages == [] and told == []  # nothing to render: nothing to tell

    # A stop between two pages: what was rendered stays, the next build does the rest.
    shutil.rmtree(cfg.public_path)
    stop = threading.Event()

    def stop_at_four(done: int, total: int) -> None:
        if done >= 4:
            stop.set()

    cut = outputs.build_site(cfg, local_catalog(cfg), TODAY, stop=stop, progress=stop_at_four)
    assert len(cut.pages) == 4
    rest = outputs.build_site(cfg, local_catalog(cfg), TODAY)
    assert len(rest.pages) == pages - 4
