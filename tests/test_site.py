"""The website's pages, built from the seeds: the front page, the issues' web copies and a
page per day, in both languages, with what a reader, a feed reader and a link preview need."""

from __future__ import annotations

import datetime as dt
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import make_paper

from newsletter.archive.sources import local_catalog
from newsletter.config import Config
from newsletter.models import Archive, Digest
from newsletter.publish import outputs, site
from newsletter.select import IsoWeek, build_issue

TODAY = dt.date(2024, 8, 5)  # the Monday after the seeds' last week
GOLDEN = Path(__file__).resolve().parent / "golden" / "site"
FEEDS = {
    ("application/atom+xml", "feed.atom"),
    ("application/feed+json", "feed.json"),
    ("application/atom+xml", "issues.atom"),
    ("application/feed+json", "issues.json"),
}
PAGES = (
    "index.html",
    "index.en.html",
    "issues/2024-W31.html",
    "issues/2024-W31.en.html",
    "days/2024-07-31.html",
    "days/2024-07-31.en.html",
)


class Head(HTMLParser):
    """The <link> and <meta> tags of a page, and every link and form action in it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[dict[str, str]] = []
        self.meta: dict[str, str] = {}
        self.hrefs: list[str] = []
        self.forms: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "link":
            self.links.append(values)
        elif tag == "meta" and ("property" in values or "name" in values):
            self.meta[values.get("property") or values["name"]] = values.get("content", "")
        elif tag == "a" and "href" in values:
            self.hrefs.append(values["href"])
        elif tag == "form":
            self.forms.append(values.get("action", ""))

    def rel(self, rel: str, **attrs: str) -> list[str]:
        return [
            link["href"]
            for link in self.links
            if link.get("rel") == rel and all(link.get(k) == v for k, v in attrs.items())
        ]


@pytest.fixture
def built(issue_cfg: Config) -> Config:
    outputs.publish_weeks(issue_cfg, local_catalog(issue_cfg), TODAY)
    return issue_cfg


def _page(cfg: Config, name: str) -> str:
    return (cfg.public_path / name).read_text(encoding="utf-8")


def test_a_page_per_issue_day_and_language(built: Config) -> None:
    names = {str(p.relative_to(built.public_path)) for p in built.public_path.rglob("*.html")}
    weeks = ("2024-W01", "2024-W05", "2024-W21", "2024-W31")
    days = ("2024-01-02", "2024-02-02", "2024-05-20", "2024-07-31")
    assert names == {
        "index.html",
        "index.en.html",
        "search.html",
        "search.en.html",
        *(f"issues/{w}{s}.html" for w in weeks for s in ("", ".en")),
        *(f"days/{d}{s}.html" for d in days for s in ("", ".en")),
    }


@pytest.mark.parametrize("name", PAGES)
def test_every_page_discovers_the_feeds_and_links_its_other_language(
    built: Config, name: str
) -> None:
    head = Head(_page(built, name))
    found = {
        (link["type"], link["href"].removeprefix(built.site_url))
        for link in head.links
        if link.get("rel") == "alternate" and "type" in link
    }
    assert found == FEEDS
    assert head.rel("icon") == [built.site_url + "favicon.svg"]
    english = name.endswith(".en.html")
    own = built.site_url + ("" if name == "index.html" else name)
    assert head.rel("canonical") == [own]
    other = own.replace(".en.html", ".html") if english else own.replace(".html", ".en.html")
    if name == "index.en.html":
        other = built.site_url
    elif name == "index.html":
        other = built.site_url + "index.en.html"
    assert head.rel("alternate", hreflang="en" if not english else "ko") == [other]
    assert other in head.hrefs  # the visible switch
    # The search box (a plain form: it works without script) and the subscribe form.
    search = f"{built.site_url}search{'.en' if english else ''}.html"
    assert head.forms == [search, f"{built.site_url}subscribe?lang={'en' if english else 'ko'}"]
    assert f'<html lang="{"en" if english else "ko"}">' in _page(built, name)


def test_front_page_features_the_latest_issue_and_lists_every_issue_by_year(
    built: Config,
) -> None:
    page = _page(built, "index.html")
    latest = page.index("최신 호")
    # The latest issue's top three, each with its thumbnail and votes.
    featured = page[latest : page.index("이번 호 전체 보기")]
    assert featured.count('class="tile"') == 3
    for paper_id, votes in (("2407.20743", 53), ("2407.20729", 23), ("2407.21018", 20)):
        assert f"2024-W31.html#paper-{paper_id}" in featured, paper_id
        assert f"papers/{paper_id}.png" in featured, paper_id
        assert f"추천\u00a0{votes}" in featured, paper_id
    # Every issue under its year, newest first, with its lead papers.
    listing = page[page.index('id="issues"') :]
    assert listing.count("<h3") == 1 and "2024년</h3>" in listing
    order = [listing.index(f"issues/{w}.html") for w in ("2024-W31", "2024-W21", "2024-W05")]
    assert order == sorted(order)
    assert "OLMo: Accelerating the Science of Language Models" in listing
    # The latest days, the subscribe box and the feeds.
    assert f'href="{built.site_url}days/2024-07-31.html"' in page
    assert 'name="email"' in page and 'type="email"' in page
    head = Head(page)
    assert head.meta["og:title"] == built.email.name
    assert head.meta["og:image"].endswith("papers/2407.20743.png")
    english = _page(built, "index.en.html")
    assert "Latest issue" in english and f"{built.site_url}issues/2024-W31.en.html" in english


def test_issue_page_has_its_neighbours_days_and_a_link_preview(built: Config) -> None:
    page = _page(built, "issues/2024-W31.html")
    head = Head(page)
    assert head.meta["og:type"] == "article"
    assert head.meta["og:title"] == head.meta["twitter:title"] == "2024년 31주차 · 주간 HF 논문"
    assert head.meta["og:url"] == built.site_url + "issues/2024-W31.html"
    description = head.meta["og:description"]
    assert description.startswith("Meltemi: The first open Large Language Model for Greek: ")
    assert len(description) <= site.DESCRIPTION_CHARS
    assert description == head.meta["twitter:description"] == head.meta["description"]
    thumbnail = "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2407.20743.png"
    assert head.meta["og:image"] == head.meta["twitter:image"] == thumbnail
    assert head.meta["twitter:card"] == "summary_large_image"
    # The previous issue (there is no next one yet), and the day pages of the week.
    assert f'href="{built.site_url}issues/2024-W21.html" rel="prev"' in page
    assert 'rel="next"' not in page
    assert f"{built.site_url}days/2024-07-31.html" in head.hrefs
    # A call to subscribe; nothing of the email's personal parts.
    assert "매주 월요일, 메일로 받아 보세요" in page
    assert "unsubscribe" not in page.lower() and "urn:x-newsletter" not in page
    earliest = _page(built, "issues/2024-W01.html")
    assert 'rel="prev"' not in earliest
    assert f'href="{built.site_url}issues/2024-W05.html" rel="next"' in earliest


def test_english_pages_mark_the_korean_summaries(built: Config) -> None:
    page = _page(built, "issues/2024-W31.en.html")
    assert '<html lang="en">' in page and "Week 31, 2024" in page
    summary = "최근 발표된 연구는 그리스어 전용 대규모 언어 모델"
    start = page.index(summary)
    assert page.rfind('lang="ko"', 0, start) > page.rfind("</span>", 0, start)
    assert f'href="{built.site_url}issues/2024-W21.en.html" rel="prev"' in page
    assert f"{built.site_url}days/2024-07-31.en.html" in page
    korean = _page(built, "issues/2024-W31.html")
    assert '<span lang="ko">' not in korean  # the page's own language needs no mark
    # The name and intro are the English edition's ([email.en]): no Korean interface text.
    english = built.email.edition("en")
    intro = english.intro.replace("'", "&#39;")
    assert f'<p class="lede">{intro}</p>' in page
    assert f"<h1>{english.name}</h1>" in _page(built, "index.en.html")
    assert built.email.name not in page and built.email.intro not in page


def test_day_page_holds_the_days_top_papers_and_links_its_issue(built: Config) -> None:
    page = _page(built, "days/2024-07-31.html")
    assert "2024년 7월 31일 수요일" in page
    assert page.count('<article class="paper"') == min(built.top_n_daily, 10)
    assert f'href="{built.site_url}issues/2024-W31.html"' in page
    assert f'href="{built.site_url}days/2024-05-20.html" rel="prev"' in page
    assert 'rel="next"' not in page
    head = Head(page)
    assert head.rel("canonical") == [built.site_url + "days/2024-07-31.html"]
    assert head.meta["og:image"].endswith("papers/2407.20743.png")


def test_a_week_not_finished_has_no_issue_page_until_published(issue_cfg: Config) -> None:
    outputs.publish_weeks(issue_cfg, local_catalog(issue_cfg), dt.date(2024, 8, 1))
    public = issue_cfg.public_path
    assert (public / "days" / "2024-07-31.html").is_file()
    assert not (public / "issues" / "2024-W31.html").exists()
    # The day page does not link to a page that does not exist.
    assert "2024-W31.html" not in _page(issue_cfg, "days/2024-07-31.html")
    assert "2024-W31" not in _page(issue_cfg, "index.html")
    # Publishing the week (a preview, the weekly send) adds it, and links it from its day.
    from newsletter.app import site as site_app

    written = site_app.web_copy(issue_cfg, IsoWeek(2024, 31), today=dt.date(2024, 8, 1))
    assert [p.name for p in written] == ["2024-W31.html", "2024-W31.en.html", "index.html"]
    assert "issues/2024-W31.html" in _page(issue_cfg, "days/2024-07-31.html")
    assert "2024-W31" in _page(issue_cfg, "index.html")


def test_summaries_go_through_the_inline_filter_and_titles_stay_text(issue_cfg: Config) -> None:
    paper = make_paper(
        "2401.00001",
        title="<script>alert(1)</script> & Co",
        sections=(
            ("What's New", "코드는 [GitHub](https://github.com/x/y)에서, **굵게** 봅니다."),
            (None, "<img src=x onerror=alert(1)> [bad](javascript:alert(1))"),
        ),
        media_url="https://example.org/t.png",
    )
    day = dt.date(2024, 1, 2)
    archive = Archive((Digest(day, (paper,)),))
    issue = build_issue(issue_cfg, archive, IsoWeek.of(day))
    for lang in ("ko", "en"):
        page = site.render_issue_page(issue_cfg, issue, lang, site.Nav(), [day])
        page += site.render_day_page(issue_cfg, archive.digests[0], lang, site.Nav(), None)
        assert '<a href="https://github.com/x/y">GitHub</a>' in page
        assert "<strong>굵게</strong>" in page
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in page
        assert "<img src=x" not in page and 'href="javascript' not in page


def test_robots_txt_keeps_crawlers_off_the_token_pages(issue_cfg: Config) -> None:
    text = site.robots_txt(issue_cfg.replace(base_url="https://example.org/news/"))
    assert text.startswith("User-agent: *\n")
    for path in ("confirm/", "unsubscribe/", "approve/"):
        assert f"Disallow: /news/{path}\n" in text


@pytest.mark.parametrize("name", PAGES)
def test_golden_page(built: Config, name: str) -> None:
    data = (built.public_path / name).read_bytes()
    path = GOLDEN / name
    if os.environ.get("NEWSLETTER_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), f"{path} is missing: NEWSLETTER_REGEN_GOLDEN=1 pytest tests/test_site.py"
    assert data == path.read_bytes(), (
        f"{name} differs from the golden file; if the change is intended: "
        "NEWSLETTER_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_site.py -k golden"
    )


def test_pages_hold_no_script_and_no_style_attribute(built: Config) -> None:
    for name in PAGES:
        page = _page(built, name)
        assert "<script" not in page.lower(), name
        assert not re.search(r"\sstyle=", page), name
