"""The Atom and JSON feeds: valid and warning-free, readable by feedparser, in the feed's
language, stable, escaped, bounded.

The golden files under tests/golden/ are the seeds' feeds; after an intended change,
regenerate them with ``NEWSLETTER_REGEN_GOLDEN=1 pytest tests/test_feed.py`` and review
the diff. What the W3C validator reports is restated in tests/feedcheck.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import feedparser
import pytest
from click.testing import CliRunner
from conftest import make_paper
from feedcheck import ATOM, MEDIA, atom_problems, markup_like, schema_valid
from lxml import etree, html

from newsletter.cli import main
from newsletter.config import Config
from newsletter.models import Archive, Digest, Media, Paper, Section
from newsletter.publish.feed import (
    FeedItem,
    atom_bytes,
    feed_entries,
    json_feed_bytes,
    plain,
    write_feeds,
)
from newsletter.publish.names import ATOM_NAME, ISSUES_ATOM_NAME, ISSUES_JSON_NAME, JSON_NAME

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
SITE = "https://example.org/newsletter/"
SEOUL = ZoneInfo("Asia/Seoul")
HOSTILE = '<script>alert("x")</script> ]]> <img src=x onerror=alert(1)> & "q"'
# What the validator reads as markup or bad characters in any text: references, an end tag,
# an address in angle brackets, C1 controls, U+FFFD, a noncharacter, UTF-8 read as Latin-1.
TRICKY = "R&amp;D &#39;x&#39; <b>b</b> <x@example.org> \x85\ufffd\ufdd0 CafÃ©"


@pytest.fixture
def feed_cfg(cfg: Config) -> Config:
    """A deployed site; a window wide enough to hold every seed digest."""
    return cfg.replace(base_url=SITE, tag_authority="example.org", feed_days=400)


def _build(digests: list[Digest] | tuple[Digest, ...], cfg: Config) -> tuple[bytes, bytes]:
    items = feed_entries(digests, cfg)
    return atom_bytes(items, cfg), json_feed_bytes(items, cfg)


def _entries(data: bytes) -> list[Any]:
    return etree.fromstring(data).findall(f"{ATOM}entry")


# -- validity: RFC 4287's RELAX NG schema and the validator's other rules -------------


def test_seeds_feed_is_valid(seeds_archive: Archive, feed_cfg: Config) -> None:
    atom, _ = _build(seeds_archive.digests, feed_cfg)
    assert len(_entries(atom)) == 33
    assert atom_problems(atom, SITE + ATOM_NAME) == []
    english = feed_cfg.replace(language="en")
    assert atom_problems(_build(seeds_archive.digests, english)[0], SITE + ATOM_NAME) == []


def test_validity_checks_catch_what_relax_ng_misses() -> None:
    bad = b"""<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns="http://www.w3.org/2005/Atom"><id>https://example.org/</id><title>t</title>
<updated>2024-05-20T09:00:00</updated>
<link rel="self" href="https://example.org/old.atom"/>
<entry><id>tag:example.org,2024:a</id><title>a</title><updated>2024-05-20T09:00:00Z</updated>
<link href="https://a.example/"/><link rel="alternate" href="https://b.example/"/></entry>
<entry><id>tag:example.org,2024:a</id><title>b</title><updated>2024-05-20T09:00:00Z</updated>
<link rel="alternate" href="/relative"/><author><name>x</name></author></entry>
</feed>"""
    assert schema_valid(bad)  # the schema alone sees no problem
    problems = "\n".join(atom_problems(bad, "https://example.org/feed.atom"))
    assert "duplicate entry id tag:example.org,2024:a" in problems
    assert "updated without a time zone: 2024-05-20T09:00:00" in problems
    assert "two alternate links" in problems
    assert "not an absolute URL: '/relative'" in problems
    assert "entry without an author" in problems
    assert "Two entries with the same value for atom:updated: 2024-05-20T09:00:00Z" in problems
    assert "Missing feed element: xml:lang" in problems
    assert "Self reference doesn't match document location" in problems


def test_validity_checks_catch_the_validators_warnings_about_text() -> None:
    bad = """<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="ko"><id>https://example.org/</id>
<title>Q&amp;amp;A</title><updated>2024-05-20T09:00:00Z</updated>
<link rel="self" href="https://example.org/feed.atom"/><author><name>a&amp;#39;b</name></author>
<entry><id>tag:example.org,2024:a</id><title>&lt;b&gt;x&lt;/b&gt;</title>
<updated>2024-05-20T09:00:00Z</updated><author><name>x &lt;x@example.org&gt;</name></author>
<summary type="html">&lt;script&gt;x&lt;/script&gt;&lt;p onclick="x"&gt;&lt;/p&gt;</summary>
<content type="html">CafÃ© �</content></entry>
</feed>""".encode()
    assert schema_valid(bad)
    problems = "\n".join(atom_problems(bad, "https://example.org/feed.atom"))
    # "title may contain HTML" for type="text" with markup-like text, in every element.
    assert "feed: title may contain HTML (type=text): &amp" in problems
    assert "tag:example.org,2024:a: title may contain HTML (type=text): </b>" in problems
    assert "feed: name contains HTML: &#39" in problems
    assert "name should not contain email address" in problems
    assert "summary contains potentially dangerous <script>" in problems
    assert "summary has a onclick attribute on <p>" in problems
    assert "tag:example.org,2024:a: summary contains bad characters" in problems
    assert "tag:example.org,2024:a: content contains bad characters" in problems
    assert markup_like("AT&T, 3 < 4, a > b, <x") is None  # none of these reads as HTML


def test_entries_of_a_day_have_distinct_times_in_rank_order(feed_cfg: Config) -> None:
    """Two entries with the same atom:updated draw a validator warning, and readers sorting
    by date lose the ranking: rank 1 is the newest of its day, one second per rank, and
    the whole day stays after feed_time (09:00 in Seoul is midnight in UTC: a second
    before it would show the previous day's date to readers in UTC)."""
    day = dt.date(2024, 5, 20)
    papers = [make_paper(f"2405.{n:05d}", votes=100 - n) for n in range(12)]
    digests = [_day(day, *papers), _day(day + dt.timedelta(days=1), make_paper("2405.9"))]
    atom, data = _build(digests, feed_cfg)
    assert atom_problems(atom, SITE + ATOM_NAME) == []
    entries = _entries(atom)
    times = {
        e.findtext(f"{ATOM}id").rsplit(":", 1)[1]: e.findtext(f"{ATOM}updated") for e in entries
    }
    assert times["2405.9"] == "2024-05-21T09:00:09+09:00"
    assert times["2405.00000"] == "2024-05-20T09:00:09+09:00"
    assert times["2405.00001"] == "2024-05-20T09:00:08+09:00"
    assert times["2405.00009"] == "2024-05-20T09:00:00+09:00"
    assert len(times) == 11  # the day's top 10 and the next day's paper
    assert all(e.findtext(f"{ATOM}published") == e.findtext(f"{ATOM}updated") for e in entries)
    newest_first = sorted(times, key=lambda i: dt.datetime.fromisoformat(times[i]), reverse=True)
    assert newest_first == ["2405.9", *(f"2405.{n:05d}" for n in range(10))]
    in_utc = {dt.datetime.fromisoformat(t).astimezone(dt.UTC).date() for t in times.values()}
    assert in_utc == {dt.date(2024, 5, 20), dt.date(2024, 5, 21)}
    items = json.loads(data)["items"]
    assert [i["date_published"] for i in items] == [times[i["id"].rsplit(":", 1)[1]] for i in items]


def test_feed_element(seeds_archive: Archive, feed_cfg: Config) -> None:
    root = etree.fromstring(_build(seeds_archive.digests, feed_cfg)[0])
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "ko"
    assert root.findtext(f"{ATOM}id") == SITE
    assert root.findtext(f"{ATOM}title") == feed_cfg.site_title
    assert root.find(f"{ATOM}title").get("type") == "html"
    assert root.findtext(f"{ATOM}subtitle") == feed_cfg.site_subtitle
    assert root.findtext(f"{ATOM}updated") == "2024-07-31T09:00:09+09:00"  # the newest entry
    links = {link.get("rel"): link.attrib for link in root.findall(f"{ATOM}link")}
    assert links["self"] == {
        "href": SITE + ATOM_NAME,
        "rel": "self",
        "type": "application/atom+xml",
    }
    assert links["alternate"]["href"] == SITE
    assert root.findtext(f"{ATOM}author/{ATOM}name") == feed_cfg.author_name
    assert root.findtext(f"{ATOM}generator") == "newsletter"


def test_entry_links_keep_their_rel_despite_feedgen_bug(
    seeds_archive: Archive, feed_cfg: Config
) -> None:
    # feedgen 1.0.0 strips rel/type/title from entry links (upstream #135); every entry
    # must still have exactly one alternate link (arXiv) and a related one (Hugging Face).
    # The day's page is linked from the content, which every reader shows.
    for entry in _entries(_build(seeds_archive.digests, feed_cfg)[0]):
        arxiv_id = entry.findtext(f"{ATOM}id").rsplit(":", 1)[1]
        day = entry.findtext(f"{ATOM}published")[:10]
        links = [dict(link.attrib) for link in entry.findall(f"{ATOM}link")]
        assert links == [
            {"href": f"https://arxiv.org/abs/{arxiv_id}", "rel": "alternate", "type": "text/html"},
            {
                "href": f"https://huggingface.co/papers/{arxiv_id}",
                "rel": "related",
                "type": "text/html",
                "title": "Hugging Face",
            },
        ]
        assert f'<a href="{SITE}days/{day}.html">' in entry.findtext(f"{ATOM}content")


def test_thumbnails_are_not_wrapped_in_media_group(
    seeds_archive: Archive, feed_cfg: Config
) -> None:
    root = etree.fromstring(_build(seeds_archive.digests, feed_cfg)[0])
    assert root.find(f".//{MEDIA}group") is None
    thumbs = {
        e.findtext(f"{ATOM}id"): e.find(f"{MEDIA}thumbnail") for e in root.iter(f"{ATOM}entry")
    }
    assert thumbs["tag:example.org,2024:arxiv:2405.10725"].get("url") == (
        "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2405.10725.png"
    )
    # AnimateLCM has a video, not an image: a link in the content and no thumbnail.
    assert thumbs["tag:example.org,2024:arxiv:2402.00769"] is None


# -- golden files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [ATOM_NAME, JSON_NAME])
def test_seeds_feed_matches_golden(seeds_archive: Archive, feed_cfg: Config, name: str) -> None:
    atom, json_feed = _build(seeds_archive.digests, feed_cfg)
    data = atom if name == ATOM_NAME else json_feed
    golden = GOLDEN / f"seeds.{name}"
    if os.environ.get("NEWSLETTER_REGEN_GOLDEN"):
        golden.write_bytes(data)
    assert data == golden.read_bytes(), (
        f"{golden.name} differs; if intended: NEWSLETTER_REGEN_GOLDEN=1 pytest {__file__}"
    )


# -- what a reader sees ----------------------------------------------------------------------


def test_feedparser_round_trip(seeds_archive: Archive, feed_cfg: Config) -> None:
    parsed = feedparser.parse(_build(seeds_archive.digests, feed_cfg)[0])
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.title == "HF 데일리 논문 요약"
    assert parsed.feed.language == "ko"
    items = {item.paper.arxiv_id: item for item in feed_entries(seeds_archive.digests, feed_cfg)}
    assert [e.id.rsplit(":", 1)[1] for e in parsed.entries] == list(items)
    for entry in parsed.entries:
        item = items[entry.id.rsplit(":", 1)[1]]
        paper = item.paper
        assert entry.title_detail.type == "text/html"
        assert _shown(entry.title) == paper.title
        assert entry.link == paper.url
        assert {"rel": "related", "href": paper.hf_url} in [
            {"rel": link.rel, "href": link.href} for link in entry.links
        ]
        assert entry.published == item.time.isoformat()
        assert entry.updated == entry.published
        assert _shown(entry.summary) == paper.first_point()
        content = entry.content[0]
        assert content.type == "text/html"
        text = html.fragment_fromstring(content.value, create_parent="div").text_content()
        for section in paper.sections:
            assert section.text in text
        names = [a.name for a in entry.authors]
        assert names == list(paper.authors[:5])
        assert {t.term for t in entry.tags} == {item.pick.date.isoformat(), "top-10"}


def _shown(markup: str) -> str:
    """What a reader shows of an HTML text: the text of its parsed fragment."""
    return str(html.fragment_fromstring(markup, create_parent="div").text_content())


def test_korean_entry_reads_back_exactly(seeds_archive: Archive, feed_cfg: Config) -> None:
    parsed = feedparser.parse(_build(seeds_archive.digests, feed_cfg)[0])
    entry = next(e for e in parsed.entries if e.id.endswith(":2405.10725"))
    assert entry.summary == (
        "일반 영역 코퍼스로 훈련된 대규모 언어 모델(LLMs)이 "
        "자연 언어 처리(NLP) 작업에서 놀라운 결과를 보였습니다."
    )
    assert entry.published == "2024-05-20T09:00:09+09:00"
    assert "2024년 5월 20일 일간 1위 · 추천\u00a06" in entry.content[0].value


def test_labels_and_words_are_in_the_feed_language(
    seeds_archive: Archive, feed_cfg: Config
) -> None:
    """The Korean feed says 새로운 점, as the email does; the English feed says What's New.
    The summaries themselves stay as written."""
    for lang, label, words in (
        ("ko", "새로운 점", "2024년 5월 20일 일간 1위 · 추천\u00a06"),
        ("en", "What's New", "No. 1 of May 20, 2024 · 6\u00a0votes"),
    ):
        cfg = feed_cfg.replace(language=lang)
        atom, data = _build(seeds_archive.digests, cfg)
        root = etree.fromstring(atom)
        assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == lang
        assert feedparser.parse(atom).feed.language == lang
        content = {
            e.findtext(f"{ATOM}id").rsplit(":", 1)[1]: e.findtext(f"{ATOM}content")
            for e in root.iter(f"{ATOM}entry")
        }
        assert f"<strong>{label}</strong>" in content["2407.20743"].replace("&#39;", "'")
        assert "그리스어 전용 대규모 언어 모델" in content["2407.20743"]
        assert words in content["2405.10725"]
        feed = json.loads(data)
        assert feed["language"] == lang
        assert all(label in i["content_html"].replace("&#39;", "'") for i in feed["items"][:3])
    korean = _build(seeds_archive.digests, feed_cfg)
    for data in korean:
        assert b"What&#39;s New" not in data and b"Technical Details" not in data


def test_cut_authors_are_named_in_the_content(feed_cfg: Config) -> None:
    many = tuple(f"Author {n}" for n in range(1, 31))
    papers = (
        make_paper("2405.1", votes=30, authors=many),
        make_paper("2405.2", votes=20, authors=many[:7]),
        make_paper("2405.3", votes=10, authors=many[:3]),
    )
    for lang, more, label in (("ko", "외 10명", "저자: "), ("en", "and 10 more", "Authors: ")):
        cfg = feed_cfg.replace(language=lang)
        atom, data = _build([_day(dt.date(2024, 5, 20), *papers)], cfg)
        assert atom_problems(atom) == []
        entries = _entries(atom)
        # At most five author elements, and never a made-up "and N more" author.
        assert [a.findtext(f"{ATOM}name") for a in entries[0].iter(f"{ATOM}author")] == list(
            many[:5]
        )
        first, second, third = (_shown(e.findtext(f"{ATOM}content")) for e in entries)
        assert f"{label}{', '.join(many[:20])} {more}" in first
        assert f"{label}{', '.join(many[:7])}" in second and "Author 8" not in second
        assert label not in third  # the author elements name them all
        items = json.loads(data)["items"]
        assert [a["name"] for a in items[0]["authors"]] == list(many[:5])
        assert f"{label}{', '.join(many[:20])} {more}" in _shown(items[0]["content_html"])


def test_summaries_own_markdown_is_rendered(feed_cfg: Config) -> None:
    text = "코드는 [GitHub 링크](https://github.com/x/y)에서, **굵게** [x](javascript:alert(1))"
    paper = make_paper(
        "2405.1", sections=(("What's New", text), (None, "https://a.example/b 참고"))
    )
    atom, data = _build([_day(dt.date(2024, 5, 20), paper)], feed_cfg)
    assert atom_problems(atom) == []
    entry = _entries(atom)[0]
    link = '<a href="https://github.com/x/y">GitHub 링크</a>에서, <strong>굵게</strong>'
    content = entry.findtext(f"{ATOM}content")
    assert link in content
    assert '<a href="https://a.example/b">https://a.example/b</a> 참고' in content
    assert 'href="javascript' not in content and "[x](javascript:alert(1))" in _shown(content)
    summary = entry.find(f"{ATOM}summary")
    assert summary.get("type") == "html" and link in summary.text
    item = json.loads(data)["items"][0]
    assert link in item["content_html"]
    assert item["summary"] == (
        "코드는 GitHub 링크 (https://github.com/x/y)에서, 굵게 [x](javascript:alert(1))"
    )


def test_json_feed(seeds_archive: Archive, feed_cfg: Config) -> None:
    atom, data = _build(seeds_archive.digests, feed_cfg)
    feed = json.loads(data)
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["feed_url"] == SITE + JSON_NAME
    assert feed["home_page_url"] == SITE
    assert feed["language"] == "ko"
    assert [i["id"] for i in feed["items"]] == [e.findtext(f"{ATOM}id") for e in _entries(atom)]
    first = feed["items"][0]
    assert first["url"] == "https://arxiv.org/abs/2407.20743"
    assert first["external_url"] == "https://huggingface.co/papers/2407.20743"
    assert first["date_published"] == "2024-07-31T09:00:09+09:00"
    assert first["image"].startswith("https://cdn-thumbnails.huggingface.co/")
    video = next(i for i in feed["items"] if i["id"].endswith(":2402.00769"))
    assert "image" not in video
    assert video["attachments"][0]["mime_type"] == "video/mp4"
    assert "동영상 보기" in video["content_html"]
    day = video["date_published"][:10]
    assert f'<a href="{SITE}days/{day}.html">' in video["content_html"]


# -- stability -----------------------------------------------------------------------------


def test_rebuild_is_byte_identical(
    seeds_archive: Archive, feed_cfg: Config, tmp_path: Path
) -> None:
    assert _build(seeds_archive.digests, feed_cfg) == _build(seeds_archive.digests, feed_cfg)
    out = tmp_path / "public"
    written = write_feeds(feed_cfg, seeds_archive, out)
    assert written == [out / ATOM_NAME, out / JSON_NAME]
    # Each with its gzip copy, for a web server in front.
    copies = [path.with_name(path.name + ".gz") for path in written]
    for path, copy in zip(written, copies, strict=True):
        assert gzip.decompress(copy.read_bytes()) == path.read_bytes()
    for path in written + copies:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert write_feeds(feed_cfg, seeds_archive, out) == []
    assert all(path.stat().st_mtime_ns == 1_000_000_000 for path in written + copies)
    assert sorted(out.iterdir()) == sorted(written + copies)  # no temp files


def _day(date: dt.date, *papers: Paper) -> Digest:
    return Digest(date, papers, (f"{date}.md",))


def test_ids_and_entries_are_stable_when_a_day_is_added(
    seeds_archive: Archive, feed_cfg: Config
) -> None:
    before = _entries(_build(seeds_archive.digests, feed_cfg)[0])
    again = dataclasses.replace(seeds_archive.digests[-1].papers[0], votes=99)
    new_day = _day(dt.date(2024, 8, 1), make_paper("2408.00001", title="새 논문"), again)
    after = _entries(_build([*seeds_archive.digests, new_day], feed_cfg)[0])
    assert [e.findtext(f"{ATOM}id") for e in after] == [
        "tag:example.org,2024:arxiv:2408.00001",
        *[e.findtext(f"{ATOM}id") for e in before],
    ]
    # Every entry already published reads exactly as before: readers see nothing new.
    assert [etree.tostring(e) for e in after[1:]] == [etree.tostring(e) for e in before]


def test_paper_on_two_days_is_one_entry_on_its_first_day(feed_cfg: Config) -> None:
    first = _day(dt.date(2024, 5, 20), make_paper("2405.00001", votes=5))
    second = _day(dt.date(2024, 5, 21), make_paper("2405.00001", votes=50), make_paper("2405.2"))
    atom, data = _build([first, second], feed_cfg)
    ids = [e.findtext(f"{ATOM}id") for e in _entries(atom)]
    assert ids == ["tag:example.org,2024:arxiv:2405.2", "tag:example.org,2024:arxiv:2405.00001"]
    entry = _entries(atom)[1]
    assert entry.findtext(f"{ATOM}published") == "2024-05-20T09:00:09+09:00"
    assert [i["id"] for i in json.loads(data)["items"]] == ids


def test_window_counts_back_from_the_newest_digest(feed_cfg: Config) -> None:
    cfg = feed_cfg.replace(feed_days=30, top_n_daily=2)
    start = dt.date(2023, 12, 1)
    days = [
        _day(start + dt.timedelta(days=n), make_paper(f"2312.{n:05d}", votes=10)) for n in range(40)
    ]
    # Seen on 2023-12-31 (not selected: two better papers), selected on 2024-01-01.
    days[30] = _day(
        days[30].date,
        *days[30].papers,
        make_paper("2401.1", votes=1),
        make_paper("2401.2"),
        make_paper("2401.3"),
    )
    days[31] = _day(days[31].date, make_paper("2401.1", votes=90))
    # Selected on 2023-12-05, before the window: a later appearance does not bring it back.
    days[35] = _day(days[35].date, *days[35].papers, make_paper("2312.00004", votes=70))
    items = feed_entries(days, cfg)
    dates = sorted({i.pick.date for i in items})
    assert dates[0] == dt.date(2023, 12, 11) and dates[-1] == dt.date(2024, 1, 9)
    ids = {i.paper.arxiv_id: i for i in items}
    assert "2312.00004" not in ids
    late = ids["2401.1"]
    assert late.pick.date == dt.date(2024, 1, 1)
    assert late.id == "tag:example.org,2023:arxiv:2401.1"  # the year it was first seen


def test_dates_use_the_configured_time_and_zone(feed_cfg: Config) -> None:
    cfg = feed_cfg.replace(timezone="America/New_York", feed_time="07:30")
    winter = _day(dt.date(2024, 1, 15), make_paper("2401.1"))
    summer = _day(dt.date(2024, 7, 15), make_paper("2407.1"))
    entries = _entries(_build([winter, summer], cfg)[0])
    assert [e.findtext(f"{ATOM}published") for e in entries] == [
        "2024-07-15T07:30:09-04:00",
        "2024-01-15T07:30:09-05:00",
    ]


# -- bad data ----------------------------------------------------------------------------


def _hostile_archive() -> list[Digest]:
    paper = Paper(
        arxiv_id="2405.66666",
        title=HOSTILE,
        media=Media("image", "javascript:alert(1)"),
        votes=3,
        authors=(HOSTILE, "정상 저자"),
        sections=(
            Section("What's <b>New</b>", HOSTILE),
            Section(None, "중첩된 <i>항목</i>", 1),
            Section(None, "]]>]]>"),
        ),
    )
    video = Paper(arxiv_id="2405.77777", title="v", media=Media("video", "data:text/html,x"))
    tricky = Paper(
        arxiv_id="2405.88888",
        title=TRICKY,
        authors=(TRICKY, "AT&T", *(f"{TRICKY} {n}" for n in range(6))),
        sections=(Section(TRICKY, TRICKY), Section(None, "[a](https://x.example/?a=1&b=2)")),
    )
    return [_day(dt.date(2024, 5, 20), paper, video, tricky)]


def _assert_inert(markup: str) -> None:
    tree = html.fragment_fromstring(markup, create_parent="div")
    assert tree.xpath("//script") == []
    assert tree.xpath("//@onerror") == []
    assert tree.xpath("//b | //i") == []  # digest text never becomes markup
    assert "javascript:" not in markup and "data:text" not in markup
    assert HOSTILE in tree.text_content()


def test_text_from_digests_is_escaped_in_atom(feed_cfg: Config) -> None:
    atom, _ = _build(_hostile_archive(), feed_cfg)
    assert b"<script" not in atom and b"<img src=x" not in atom
    assert atom.count(b"]]>") == atom.count(b"<![CDATA[")  # only the CDATA sections' own ends
    assert atom_problems(atom, SITE + ATOM_NAME) == []
    assert atom_problems(_build(_hostile_archive(), feed_cfg.replace(language="en"))[0]) == []
    entry = next(e for e in _entries(atom) if e.findtext(f"{ATOM}id").endswith("66666"))
    # type="html" holding escaped text: every reader shows the title exactly as written.
    title = entry.find(f"{ATOM}title")
    assert title.get("type") == "html"
    assert _shown(title.text) == HOSTILE
    assert html.fragment_fromstring(title.text, create_parent="div").xpath("//*/*") == []
    assert entry.find(f"{ATOM}summary").get("type") == "html"
    assert _shown(entry.findtext(f"{ATOM}summary")) == HOSTILE
    # An author name has no type: nothing in it may read as markup.
    name = entry.findtext(f"{ATOM}author/{ATOM}name")
    assert (
        name
        == plain(HOSTILE)
        == '< script>alert("x")< /script> ]]> < img src=x onerror=alert(1)> & "q"'
    )
    assert entry.find(f"{MEDIA}thumbnail") is None
    _assert_inert(entry.findtext(f"{ATOM}content"))
    parsed = feedparser.parse(atom)
    assert parsed.bozo == 0
    assert _shown(parsed.entries[0].title) == HOSTILE


def test_what_the_validator_reads_as_markup_or_bad_characters_is_defused(
    feed_cfg: Config,
) -> None:
    atom, _ = _build(_hostile_archive(), feed_cfg)
    assert atom_problems(atom, SITE + ATOM_NAME) == []
    entry = next(e for e in _entries(atom) if e.findtext(f"{ATOM}id").endswith("88888"))
    shown = "R&amp;D &#39;x&#39; <b>b</b> <x@example.org> Café"
    assert _shown(entry.findtext(f"{ATOM}title")) == shown
    names = [n.text for n in entry.iter(f"{ATOM}name")]
    assert names[:2] == ["R& amp;D & #39;x& #39; < b>b< /b> < x@example.org> Café", "AT&T"]
    content = " ".join(_shown(entry.findtext(f"{ATOM}content")).split())
    assert f"{shown}: {shown}" in content  # a label and its text
    assert f"저자: {shown}, AT&T, {shown} 0" in content
    assert 'href="https://x.example/?a=1&amp;b=2"' in entry.findtext(f"{ATOM}content")


def test_text_from_digests_is_escaped_in_json(feed_cfg: Config) -> None:
    _, data = _build(_hostile_archive(), feed_cfg)
    for line in data.decode().split("\n"):
        plain = line.split(',"content_html":', 1)[0]
        assert "<" not in plain and ">" not in plain and "&" not in plain
    items = json.loads(data)["items"]
    item = next(i for i in items if i["id"].endswith("66666"))
    assert item["title"] == HOSTILE
    assert item["summary"] == HOSTILE
    assert "image" not in item
    _assert_inert(item["content_html"])
    video = next(i for i in items if i["id"].endswith("77777"))
    assert "attachments" not in video and "data:" not in video["content_html"]
    tricky = next(i for i in items if i["id"].endswith("88888"))
    assert tricky["title"] == tricky["summary"] == TRICKY  # JSON strings carry any text


def test_control_characters_do_not_break_the_feed(feed_cfg: Config) -> None:
    paper = make_paper("2405.1", title="제목\x00\x1b 끝", sections=((None, "요약\x0b입니다"),))
    atom, data = _build([_day(dt.date(2024, 5, 20), paper)], feed_cfg)
    assert atom_problems(atom) == []
    assert _entries(atom)[0].findtext(f"{ATOM}title") == "제목 끝"
    assert json.loads(data)["items"][0]["title"] == "제목\x00\x1b 끝"


def test_nested_points_become_nested_lists(feed_cfg: Config) -> None:
    paper = make_paper("2405.1", sections=((None, "a"),))
    paper = dataclasses.replace(
        paper,
        sections=(
            Section(None, "a"),
            Section(None, "b", 1),
            Section(None, "c", 2),
            Section("L", "d"),
        ),
    )
    item = feed_entries([_day(dt.date(2024, 5, 20), paper)], feed_cfg)[0]
    content = json.loads(json_feed_bytes([item], feed_cfg))["items"][0]["content_html"]
    assert (
        "<ul><li>a<ul><li>b<ul><li>c</li></ul></li></ul></li><li><strong>L</strong>: d</li></ul>"
        in content
    )


def test_empty_feed_is_valid_and_has_a_fixed_date(feed_cfg: Config) -> None:
    atom, data = _build([], feed_cfg)
    assert atom_problems(atom) == []
    assert etree.fromstring(atom).findtext(f"{ATOM}updated") == "1970-01-01T00:00:00+00:00"
    assert json.loads(data)["items"] == []


# -- the command and the size budget -------------------------------------------------------


def test_feed_command_writes_then_leaves_files_alone(seeds_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "www"
    runner = CliRunner()
    args = ["feed", "--source", str(seeds_dir), "--out", str(out)]
    first = runner.invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    names = (ATOM_NAME, JSON_NAME, ISSUES_ATOM_NAME, ISSUES_JSON_NAME)
    lines = first.stdout.splitlines()
    assert lines[:-1] == [f"{out / name}: written" for name in names]
    # And the website those feeds link to, in the same folder.
    assert lines[-1] == f"{out}: 20 web pages rendered"
    assert (out / "days" / "2024-07-31.html").is_file()
    # The seeds' weeks are long over: the issues feed has every one of them.
    assert (out / ISSUES_ATOM_NAME).read_text(encoding="utf-8").count("<entry>") == 4
    second = runner.invoke(main, args, catch_exceptions=False)
    assert second.stdout.splitlines() == [
        *(f"{out / name}: unchanged" for name in names),
        f"{out}: 0 web pages rendered",
    ]


def test_feed_command_without_digests_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["feed", "--source", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "nothing to put in the feed" in result.stderr


def _bench() -> ModuleType:
    path = HERE.parent / "bench" / "feed.py"
    spec = importlib.util.spec_from_file_location("bench_feed", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_feed", module)
    spec.loader.exec_module(module)
    return module


def test_thirty_day_feed_stays_under_one_megabyte(feed_cfg: Config) -> None:
    # Seed-sized Korean summaries, 16 papers every single day: a heavy month.
    digests = _bench().synthetic_digests(45)
    cfg = feed_cfg.replace(feed_days=30)
    items: list[FeedItem] = feed_entries(digests, cfg)
    assert len(items) == 300
    atom, data = atom_bytes(items, cfg), json_feed_bytes(items, cfg)
    assert len(atom) < 1_000_000 and len(data) < 1_000_000
    assert atom_problems(atom) == []
    assert feedparser.parse(atom).bozo == 0
