"""The issues feed (issues.atom, issues.json): the finished weeks' issues, valid and
warning-free, linking to their web copies, stable, escaped.

The golden files tests/golden/seeds.issues.* are the seeds' issues feeds; regenerate them
with ``NEWSLETTER_REGEN_GOLDEN=1 pytest tests/test_issue_feed.py -k golden`` and review
the diff.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import feedparser
import pytest
from conftest import make_paper
from feedcheck import ATOM, atom_problems
from lxml import etree, html

from newsletter.config import Config
from newsletter.models import Archive, Digest, Section
from newsletter.publish.issue_feed import (
    ISSUES_SHOWN,
    issue_entries,
    issues_atom_bytes,
    issues_json_bytes,
    write_issue_feeds,
)
from newsletter.publish.names import ISSUES_ATOM_NAME, ISSUES_JSON_NAME

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
SITE = "https://example.org/newsletter/"
AFTER = dt.date(2024, 8, 5)  # the Monday after the seeds' last week


@pytest.fixture
def feed_cfg(cfg: Config) -> Config:
    return cfg.replace(base_url=SITE, tag_authority="example.org")


def _build(archive: Archive, cfg: Config, today: dt.date = AFTER) -> tuple[bytes, bytes]:
    items = issue_entries(cfg, archive, today)
    return issues_atom_bytes(items, cfg), issues_json_bytes(items, cfg)


def _shown(markup: str) -> str:
    return str(html.fragment_fromstring(markup, create_parent="div").text_content())


def test_seeds_issues_feed_is_valid(seeds_archive: Archive, feed_cfg: Config) -> None:
    for lang in ("ko", "en"):
        atom, _ = _build(seeds_archive, feed_cfg.replace(language=lang))
        assert atom_problems(atom, SITE + ISSUES_ATOM_NAME) == []
        assert feedparser.parse(atom).bozo == 0


def test_entries_are_the_finished_weeks_newest_first(
    seeds_archive: Archive, feed_cfg: Config
) -> None:
    root = etree.fromstring(_build(seeds_archive, feed_cfg)[0])
    entries = root.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}id") for e in entries] == [
        f"tag:example.org,2024:issue:2024-W{week}" for week in ("31", "21", "05", "01")
    ]
    first = entries[0]
    assert first.findtext(f"{ATOM}title") == "2024년 31주차"
    # Sent on the Monday after the week, at schedule.weekly_at.
    assert first.findtext(f"{ATOM}updated") == "2024-08-05T08:00:00+09:00"
    assert first.findtext(f"{ATOM}published") == "2024-08-05T08:00:00+09:00"
    assert root.findtext(f"{ATOM}updated") == "2024-08-05T08:00:00+09:00"
    assert [dict(link.attrib) for link in first.findall(f"{ATOM}link")] == [
        {"href": f"{SITE}issues/2024-W31.html", "rel": "alternate", "type": "text/html"}
    ]
    assert _shown(first.findtext(f"{ATOM}summary")).startswith(
        "이번 주 추천 1위: Meltemi: The first open Large Language Model for Greek 외 9편"
    )
    assert root.findtext(f"{ATOM}title") == "주간 HF 논문"
    links = {link.get("rel"): link.get("href") for link in root.findall(f"{ATOM}link")}
    assert links == {"self": SITE + ISSUES_ATOM_NAME, "alternate": SITE}
    assert root.findtext(f"{ATOM}id") == SITE + ISSUES_ATOM_NAME


def test_a_week_under_way_has_no_entry_yet(seeds_archive: Archive, feed_cfg: Config) -> None:
    sunday = dt.date(2024, 8, 4)
    ids = [i.id for i in issue_entries(feed_cfg, seeds_archive, sunday)]
    assert ids[0] == "tag:example.org,2024:issue:2024-W21"
    monday = [i.id for i in issue_entries(feed_cfg, seeds_archive, sunday + dt.timedelta(1))]
    assert monday == ["tag:example.org,2024:issue:2024-W31", *ids]


def test_the_feed_holds_the_latest_weeks(feed_cfg: Config) -> None:
    start = dt.date(2024, 1, 1)
    digests = tuple(
        Digest(start + dt.timedelta(weeks=n), (make_paper(f"2401.{n:05d}"),)) for n in range(14)
    )
    items = issue_entries(feed_cfg, Archive(digests), dt.date(2024, 6, 1))
    assert len(items) == ISSUES_SHOWN
    assert [str(i.week) for i in items[:2]] == ["2024-W14", "2024-W13"]
    assert str(items[-1].week) == "2024-W05"


def test_content_is_a_plain_fragment_of_the_issue(seeds_archive: Archive, feed_cfg: Config) -> None:
    entry = etree.fromstring(_build(seeds_archive, feed_cfg)[0]).find(f"{ATOM}entry")
    content = entry.findtext(f"{ATOM}content")
    tree = html.fragment_fromstring(content, create_parent="div")
    assert tree.xpath("//table | //img | //style | //@style | //@class") == []
    headings = [h.text_content() for h in tree.iter("h3")]
    assert len(headings) == 10
    assert headings[0] == "1위: Meltemi: The first open Large Language Model for Greek"
    assert tree.xpath("//h3[1]/a/@href") == ["https://arxiv.org/abs/2407.20743"]
    text = _shown(content)
    assert "추천\u00a053 · 저자: Vassilis Papavasileiou, Leon Voukoutis" in text
    assert "새로운 점: 최근 발표된 연구는 그리스어 전용" in text
    assert "What's New" not in text and "Hugging Face 논문 페이지" in text
    assert content.startswith("<p>2024년 7월 29일")


def test_english_issues_feed_links_the_english_web_copy(
    seeds_archive: Archive, feed_cfg: Config
) -> None:
    cfg = feed_cfg.replace(language="en")
    atom, data = _build(seeds_archive, cfg)
    root = etree.fromstring(atom)
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert root.findtext(f"{ATOM}title") == feed_cfg.email.edition("en").name
    assert json.loads(data)["title"] == "HF Papers weekly"
    entry = root.find(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}title") == "Week 31, 2024"
    assert entry.find(f"{ATOM}link").get("href") == f"{SITE}issues/2024-W31.en.html"
    text = _shown(entry.findtext(f"{ATOM}content"))
    assert "No. 1: Meltemi" in text and "53\u00a0votes · Authors: Vassilis" in text
    assert "What's New: " in text
    assert json.loads(data)["items"][0]["url"] == f"{SITE}issues/2024-W31.en.html"


def test_json_issues_feed(seeds_archive: Archive, feed_cfg: Config) -> None:
    atom, data = _build(seeds_archive, feed_cfg)
    feed = json.loads(data)
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["feed_url"] == SITE + ISSUES_JSON_NAME
    assert feed["language"] == "ko"
    ids = [e.findtext(f"{ATOM}id") for e in etree.fromstring(atom).findall(f"{ATOM}entry")]
    assert [i["id"] for i in feed["items"]] == ids
    first = feed["items"][0]
    assert first["url"] == f"{SITE}issues/2024-W31.html"
    assert first["title"] == "2024년 31주차"
    assert first["date_published"] == first["date_modified"] == "2024-08-05T08:00:00+09:00"
    assert first["summary"].startswith("이번 주 추천 1위: Meltemi")
    assert "<h3>1위: <a href=" in first["content_html"]


def test_summaries_are_escaped_and_their_markdown_rendered(feed_cfg: Config) -> None:
    hostile = '<script>alert("x")</script> ]]> & "q" &amp; \x85 CafÃ©'
    paper = dataclasses.replace(
        make_paper("2405.1", title=hostile, authors=(hostile,)),
        sections=(
            Section("What's <b>New</b>", "[코드](https://github.com/x) " + hostile),
            Section(None, "[x](javascript:alert(1))", 1),
        ),
    )
    archive = Archive((Digest(dt.date(2024, 5, 20), (paper,)),))
    atom, data = _build(archive, feed_cfg)
    assert atom_problems(atom, SITE + ISSUES_ATOM_NAME) == []
    content = etree.fromstring(atom).find(f"{ATOM}entry").findtext(f"{ATOM}content")
    tree = html.fragment_fromstring(content, create_parent="div")
    assert tree.xpath("//script | //b") == []
    assert tree.xpath("//a/@href") == [
        "https://arxiv.org/abs/2405.1",
        "https://github.com/x",
        "https://huggingface.co/papers/2405.1",
    ]
    assert '<script>alert("x")</script> ]]> & "q" &amp;' in _shown(content)
    item = json.loads(data)["items"][0]
    assert "<script" not in item["content_html"]
    assert 'href="javascript' not in item["content_html"]


def test_empty_and_unchanged_feeds(
    seeds_archive: Archive, feed_cfg: Config, tmp_path: Path
) -> None:
    atom, data = _build(Archive(), feed_cfg)
    assert atom_problems(atom, SITE + ISSUES_ATOM_NAME) == []
    assert json.loads(data)["items"] == []
    out = tmp_path / "public"
    written = write_issue_feeds(feed_cfg, seeds_archive, AFTER, out)
    assert written == [out / ISSUES_ATOM_NAME, out / ISSUES_JSON_NAME]
    for path in written:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert write_issue_feeds(feed_cfg, seeds_archive, AFTER + dt.timedelta(days=3), out) == []
    assert all(path.stat().st_mtime_ns == 1_000_000_000 for path in written)


@pytest.mark.parametrize("name", [ISSUES_ATOM_NAME, ISSUES_JSON_NAME])
def test_seeds_issues_feed_matches_golden(
    seeds_archive: Archive, feed_cfg: Config, name: str
) -> None:
    atom, json_feed = _build(seeds_archive, feed_cfg)
    data = atom if name == ISSUES_ATOM_NAME else json_feed
    golden = GOLDEN / f"seeds.{name}"
    if os.environ.get("NEWSLETTER_REGEN_GOLDEN"):
        golden.write_bytes(data)
    assert data == golden.read_bytes(), (
        f"{golden.name} differs; if intended: NEWSLETTER_REGEN_GOLDEN=1 pytest {__file__}"
    )
