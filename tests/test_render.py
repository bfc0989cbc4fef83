"""The weekly issue: content, localization, escaping, size, golden files, web copy, CLI."""

from __future__ import annotations

import email
import email.policy
import io
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from click.testing import CliRunner
from conftest import long_week, make_paper

from newsletter.cli import main
from newsletter.config import Config
from newsletter.mail.message import message_template, preferences_url, unsubscribe_url
from newsletter.mail.tokens import make_token
from newsletter.models import Archive, Digest, Media
from newsletter.publish import render
from newsletter.publish.render import LANGS, render_issue
from newsletter.select import IsoWeek, NoIssueError, build_issue, issue_weeks, latest_week

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
LOCALES = ROOT / "newsletter" / "locales"
SEED_WEEKS = ("2024-W01", "2024-W05", "2024-W21", "2024-W31")
GMAIL_CLIP = 102_000  # bytes of HTML; Gmail clips larger messages
GOLDEN_TOKEN = "golden-token"
GOLDEN_ID = "<golden@news.example.org>"


def _issue_html(cfg: Config, archive: Archive, week: str, lang: str = "ko") -> str:
    rendered = render_issue(cfg, build_issue(cfg, archive, IsoWeek.parse(week)), lang)
    return rendered.html_for(unsubscribe_url(cfg, "tok"), preferences_url(cfg, "tok"))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


class _Outside(HTMLParser):
    """The text of a page outside every element whose lang is ``lang``."""

    VOID = frozenset({"img", "br", "meta", "link", "hr", "input"})

    def __init__(self, lang: str) -> None:
        super().__init__()
        self.lang = lang
        self.stack: list[bool] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        inside = bool(self.stack and self.stack[-1]) or dict(attrs).get("lang") == self.lang
        self.stack.append(inside)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not (self.stack and self.stack[-1]):
            self.text.append(data)


def _text_outside_lang(html: str, lang: str) -> str:
    parser = _Outside(lang)
    parser.feed("<body" + html.split("<body", 1)[1])
    return "".join(parser.text)


# -- content ----------------------------------------------------------------------------------


def test_seed_weeks(seeds_archive: Archive) -> None:
    assert [str(w) for w in issue_weeks(seeds_archive)] == list(SEED_WEEKS)
    assert str(latest_week(seeds_archive)) == "2024-W31"


def test_a_week_without_digests_is_no_issue(issue_cfg: Config, seeds_archive: Archive) -> None:
    with pytest.raises(
        NoIssueError, match=r"no digests in week 2024-W10 \(2024-03-04 to 2024-03-10\)"
    ):
        build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W10"))
    with pytest.raises(NoIssueError, match="no digests"):
        latest_week(Archive())


def test_issue_holds_the_top_n(issue_cfg: Config, seeds_archive: Archive) -> None:
    cfg = issue_cfg.replace(top_n_weekly=3)
    issue = build_issue(cfg, seeds_archive, IsoWeek.parse("2024-W05"))
    assert [p.rank for p in issue.picks] == [1, 2, 3]
    html = render_issue(cfg, issue, "ko").html
    assert html.count('class="rank"') == 3


def test_header_korean(issue_cfg: Config, seeds_archive: Archive) -> None:
    html = _issue_html(issue_cfg, seeds_archive, "2024-W05")
    assert "주간 HF 논문" in html
    assert "2024년 5주차" in html
    assert re.search(r"2024년 1월 29일\s*~\s*2월 4일", html)  # spacing: see test below
    assert issue_cfg.email.intro in html
    assert '<html lang="ko"' in html


def test_header_english(issue_cfg: Config, seeds_archive: Archive) -> None:
    html = _issue_html(issue_cfg, seeds_archive, "2024-W05", "en")
    assert "Week 5, 2024" in html
    assert re.search(r"Jan 29\s*–\s*Feb 4, 2024", html)
    assert '<html lang="en"' in html


def test_subject_carries_the_lead(issue_cfg: Config, seeds_archive: Archive) -> None:
    issue = build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W31"))
    assert issue.picks[0].paper.title.startswith("Meltemi: ")
    assert render_issue(issue_cfg, issue, "ko").subject == (
        "[주간 HF 논문] 2024년 31주차: Meltemi 외 9편"
    )
    assert render_issue(issue_cfg, issue, "en").subject == (
        "HF Papers weekly, 2024-W31: Meltemi and 9 more"
    )
    one = build_issue(issue_cfg.replace(top_n_weekly=1), seeds_archive, issue.week)
    assert render_issue(issue_cfg, one, "en").subject == "HF Papers weekly, 2024-W31: Meltemi"


@pytest.mark.parametrize(
    ("title", "short"),
    [
        ("Meltemi: The first open Large Language Model for Greek", "Meltemi"),
        ("Grounded 3D-LLM with Referent Tokens", "Grounded 3D-LLM with Referent Tokens"),
        # A name in capitals only says little (and a subject of capitals reads as shouting).
        (
            "INDUS: Effective and Efficient Language Models",
            "INDUS: Effective and Efficient Language…",
        ),
        (
            "Observational Scaling Laws and the Predictability of Language Model Performance",
            "Observational Scaling Laws and the…",
        ),
        ("A" * 60, "A" * 40 + "…"),
        (
            "An Extremely Long Name Before The Colon Which Is Not A Name: Really",
            "An Extremely Long Name Before The Colon…",
        ),
    ],
)
def test_short_title(title: str, short: str) -> None:
    assert render.short_title(title) == short


def test_english_edition_has_no_korean_interface_text(
    issue_cfg: Config, seeds_archive: Archive
) -> None:
    issue = build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W31"))
    rendered = render_issue(issue_cfg, issue, "en")
    hangul = re.compile("[\uac00-\ud7a3\u3131-\u318e]")
    assert not hangul.search(rendered.subject)
    # Every Korean character of the page is source text inside an element marked lang="ko".
    outside = _text_outside_lang(
        rendered.html_for("https://x.example/u", "https://x.example/p"), "ko"
    )
    assert not hangul.search(outside), hangul.findall(outside)[:20]
    assert rendered.html.count(' lang="ko"') == len(issue.picks)
    # The text part: only the summaries' own lines (wrapped) are Korean.
    summaries = {render.inline.to_text(s.text) for p in issue.picks for s in p.paper.sections}
    for line in rendered.text.splitlines():
        text = line.strip().removeprefix("- ")
        assert not hangul.search(text) or any(text in summary for summary in summaries), line


def test_korean_edition_marks_the_english_titles(issue_cfg: Config, seeds_archive: Archive) -> None:
    issue = build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W31"))
    html = render_issue(issue_cfg, issue, "ko").html
    assert ' lang="ko"' not in html.split("<body", 1)[1]
    titled = [a for t, a in _tags(html) if t == "h2"]
    assert titled and all(a.get("lang") == "en" for a in titled)


def test_edition_settings_override_per_language(issue_cfg: Config, seeds_archive: Archive) -> None:
    import dataclasses

    email = issue_cfg.email
    cfg = issue_cfg.replace(
        email=dataclasses.replace(
            email,
            reply_to="editor@news.example.org",
            en=dataclasses.replace(
                email.en, name="Papers", intro="Hello, readers.", subject_template="{title}!"
            ),
        )
    )
    issue = build_issue(cfg, seeds_archive, IsoWeek.parse("2024-W31"))
    en = render_issue(cfg, issue, "en")
    assert en.subject == "Meltemi!"
    assert "Hello, readers." in en.html and "Papers" in en.html
    assert "Contact: editor@news.example.org" in en.text
    ko = render_issue(cfg, issue, "ko")
    assert ko.subject.startswith("[주간 HF 논문]") and "문의: editor@news.example.org" in ko.text


def test_footer_links_and_postal_address(issue_cfg: Config, seeds_archive: Archive) -> None:
    import dataclasses

    cfg = issue_cfg.replace(
        email=dataclasses.replace(issue_cfg.email, postal_address="서울시 중구 세종대로 110")
    )
    issue = build_issue(cfg, seeds_archive, IsoWeek.parse("2024-W31"))
    for lang in LANGS:
        rendered = render_issue(cfg, issue, lang)
        footer = rendered.html.rsplit('class="rank"', 1)[1]
        assert f'href="{cfg.site_url}subscribe"' in footer
        assert "서울시 중구 세종대로 110" in footer
        assert f"{cfg.site_url}subscribe" in rendered.text
        assert rendered.text.rstrip().endswith("서울시 중구 세종대로 110")
    plain = render_issue(issue_cfg, issue, "ko").html
    assert "세종대로" not in plain


def test_paper_block(issue_cfg: Config, seeds_archive: Archive) -> None:
    issue = build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W31"))
    first = issue.picks[0].paper
    ko = render_issue(issue_cfg, issue, "ko")
    en = render_issue(issue_cfg, issue, "en")
    assert f'href="{first.url}"' in ko.html
    assert f'href="{first.hf_url}"' in ko.html
    assert "1위" in ko.html and "No. 1" in en.html
    # A no-break space keeps the number with its word.
    assert "추천&nbsp;53" in ko.html and "53&nbsp;votes" in en.html
    assert "Vassilis Papavasileiou, Leon Voukoutis, Prokopis Prokopidis 외 6명" in ko.html
    assert "Vassilis Papavasileiou, Leon Voukoutis, Prokopis Prokopidis and 6 more" in en.html
    # The summaries stay Korean in both languages.
    assert first.sections[0].text in ko.html and first.sections[0].text in en.html


def test_labels_are_localized(issue_cfg: Config, seeds_archive: Archive) -> None:
    ko = _issue_html(issue_cfg, seeds_archive, "2024-W31")
    en = _issue_html(issue_cfg, seeds_archive, "2024-W31", "en")
    for label in ("새로운 점", "기술적 세부 사항", "성능 하이라이트", "결론 및 향후 연구", "한계"):
        assert label in ko
    assert "What's New" not in ko
    for label in ("What's New", "Technical Details", "Performance Highlights", "Limitations"):
        assert label.replace("'", "&#39;") in en or label in en


def test_unknown_label_and_nested_bullets(issue_cfg: Config) -> None:
    paper = make_paper(
        "2405.00001",
        sections=(
            ("Surprising Results", "놀라운 결과입니다."),
            (None, "첫 번째 점"),
            (None, "두 번째 점"),
        ),
    )
    archive = Archive((Digest(IsoWeek.parse("2024-W21").monday, (paper,)),))
    rendered = render_issue(
        issue_cfg, build_issue(issue_cfg, archive, IsoWeek.parse("2024-W21")), "ko"
    )
    assert "Surprising Results" in rendered.html
    assert rendered.html.count("<li") == 2
    assert "[Surprising Results]\n놀라운 결과입니다." in rendered.text
    assert "- 첫 번째 점\n- 두 번째 점" in rendered.text


def test_numbers_are_localized(issue_cfg: Config) -> None:
    paper = make_paper("2405.00002", votes=12345, authors=("Solo",))
    archive = Archive((Digest(IsoWeek.parse("2024-W21").monday, (paper,)),))
    issue = build_issue(issue_cfg, archive, IsoWeek.parse("2024-W21"))
    assert "추천\u00a012,345" in render_issue(issue_cfg, issue, "ko").text
    assert "12,345\u00a0votes" in render_issue(issue_cfg, issue, "en").text
    assert "외" not in render_issue(issue_cfg, issue, "ko").text.split("Solo")[1].split("\n")[0]


def test_video_paper_links_the_video(issue_cfg: Config, seeds_archive: Archive) -> None:
    issue = build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W05"))
    video = next(p.paper for p in issue.picks if p.paper.media and p.paper.media.kind == "video")
    assert isinstance(video.media, Media)
    rendered = render_issue(issue_cfg, issue, "ko")
    assert f'href="{video.media.url}"' in rendered.html
    # Too long to follow its label within 78 characters: a line of its own, whole.
    assert f"동영상 보기:\n{video.media.url}\n" in rendered.text
    assert not any(a.get("src") == video.media.url for t, a in _tags(rendered.html) if t == "img")


def test_images_are_absolute_and_collapse_when_blocked(
    issue_cfg: Config, seeds_archive: Archive
) -> None:
    for week in SEED_WEEKS:
        for lang, alt in (("ko", "[썸네일]"), ("en", "[Thumbnail]")):
            html = _issue_html(issue_cfg, seeds_archive, week, lang)
            images = [a for t, a in _tags(html) if t == "img"]
            assert images
            for attrs in images:
                assert (attrs["src"] or "").startswith("https://")
                # A short alt, not the title again; no fixed height, so a blocked image
                # leaves that alt text rather than a tall grey box.
                assert attrs["alt"] == alt
                assert attrs["width"] == "550" and "height" not in attrs
                assert "height:auto" in (attrs["style"] or "")
                assert "background" not in (attrs["style"] or "")


def test_thumbnails_can_be_left_out(issue_cfg: Config, seeds_archive: Archive) -> None:
    import dataclasses

    cfg = issue_cfg.replace(email=dataclasses.replace(issue_cfg.email, thumbnails=False))
    html = _issue_html(cfg, seeds_archive, "2024-W31")
    assert not [a for t, a in _tags(html) if t == "img"]


def test_contents_list_and_view_in_browser_come_first(
    issue_cfg: Config, seeds_archive: Archive
) -> None:
    issue = build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W31"))
    for lang, view in (("ko", "브라우저에서 보기"), ("en", "View in browser")):
        rendered = render_issue(issue_cfg, issue, lang)
        body = rendered.html.split("<body", 1)[1]
        links = [a["href"] for t, a in _tags(body) if t == "a"]
        assert links[0] == rendered.web_url
        assert body.index(view) < body.index('class="rank"')
        # Then the contents: one entry per paper, in rank order, each a jump to its paper.
        ranks = len(issue.picks)
        assert links[1 : 1 + ranks] == [f"#p{n}" for n in range(1, ranks + 1)]
        ids = [a["id"] for _, a in _tags(body) if a.get("id")]
        assert ids == [f"p{n}" for n in range(1, ranks + 1)]
        first = issue.picks[0]
        assert f"1. {first.paper.title}" in rendered.text.split("=" * 60)[0]
        assert rendered.text.startswith(f"{view}: {rendered.web_url}\n")


def test_labels_stand_apart_from_their_text(issue_cfg: Config, seeds_archive: Archive) -> None:
    html = _issue_html(issue_cfg, seeds_archive, "2024-W31")
    # A label running straight into its text (</strong>요약) is scored as obfuscation.
    assert not re.search(r"</(strong|b|span)>[^\s<]", html)
    assert re.search(r'<p class="lab"[^>]*>새로운 점</p>\s*<p class="sec', html)


# -- email-safe HTML ------------------------------------------------------------------------


def test_css_is_inlined_and_at_rules_survive(issue_cfg: Config, seeds_archive: Archive) -> None:
    html = _issue_html(issue_cfg, seeds_archive, "2024-W31")
    head, body = html.split("<body", 1)
    assert "@media (prefers-color-scheme:dark)" in head
    assert "@media only screen and (max-width:620px)" in head
    assert "'Apple SD Gothic Neo','Malgun Gothic','맑은 고딕','Noto Sans KR',sans-serif" in body
    assert "word-break:keep-all" in body
    assert "max-width:600px" in body
    assert '<table class="wrap" role="presentation"' in body
    # Every paragraph carries its own style: Naver and Daum drop <style>.
    assert all(a.get("style") for t, a in _tags(body) if t in ("p", "h1", "h2", "td", "li"))


def test_preheader_is_visible_text_and_first(issue_cfg: Config, seeds_archive: Archive) -> None:
    issue = build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W31"))
    rendered = render_issue(issue_cfg, issue, "ko")
    assert rendered.preheader == f"이번 주 추천 1위: {issue.picks[0].paper.title} 외 9편"
    body = rendered.html.split("<body", 1)[1]
    first = re.search(r'<p class="top mu" style="([^"]*)">([^<]*)', body)
    assert first is not None
    assert first.group(2).startswith(rendered.preheader)
    # Nothing hidden: spam filters score invisible or low-contrast text.
    for hidden in ("display:none", "transparent", "opacity:0", "max-height:0", "font-size:1px"):
        assert hidden not in first.group(1)
        assert hidden not in body
    assert "&#8199;" not in body and "\u2007" not in body


@pytest.mark.parametrize("week", SEED_WEEKS)
def test_seed_issues_fit_under_the_gmail_clip(
    issue_cfg: Config, seeds_archive: Archive, week: str
) -> None:
    for lang in LANGS:
        assert len(_issue_html(issue_cfg, seeds_archive, week, lang).encode()) < GMAIL_CLIP


def test_long_week_fits_under_the_gmail_clip(issue_cfg: Config) -> None:
    archive = long_week(10)
    issue = build_issue(issue_cfg, archive, IsoWeek.of(archive.digests[0].date))
    assert len(issue.picks) == 10
    for lang in LANGS:
        html = render_issue(issue_cfg, issue, lang).html_for(
            unsubscribe_url(issue_cfg, "x" * 40), preferences_url(issue_cfg, "x" * 40)
        )
        size = len(html.encode())
        assert 60_000 < size < GMAIL_CLIP, size


# -- escaping -----------------------------------------------------------------------------------

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def test_hostile_text_is_inert(issue_cfg: Config) -> None:
    paper = make_paper(
        "2405.00003",
        title=f"Title {HOSTILE}",
        authors=(f"Eve {HOSTILE}", "Bob"),
        sections=((f"Label {HOSTILE} 100%", f"Summary {HOSTILE}"), (None, f"Point {HOSTILE}")),
    )
    archive = Archive((Digest(IsoWeek.parse("2024-W21").monday, (paper,)),))
    issue = build_issue(issue_cfg, archive, IsoWeek.parse("2024-W21"))
    for lang in LANGS:
        rendered = render_issue(issue_cfg, issue, lang)
        html = rendered.html_for(
            unsubscribe_url(issue_cfg, "tok"), preferences_url(issue_cfg, "tok")
        )
        assert "<script" not in html.lower()
        assert "onerror" not in " ".join(name for _, attrs in _tags(html) for name in attrs)
        images = [a for t, a in _tags(html) if t == "img"]
        assert images == []  # the paper has no thumbnail; no injected <img>
        assert "&lt;script&gt;" in html
        # Plain text is shown as text: the strings are there verbatim, and inert.
        assert f"Title {HOSTILE}" in rendered.text
        assert f"Summary {HOSTILE}" in rendered.text
        assert f"Label {HOSTILE} 100%" in rendered.text


def test_config_strings_are_escaped(issue_cfg: Config, seeds_archive: Archive) -> None:
    import dataclasses

    cfg = issue_cfg.replace(
        email=dataclasses.replace(issue_cfg.email, intro=HOSTILE, contact=HOSTILE)
    )
    html = _issue_html(cfg, seeds_archive, "2024-W05")
    assert "<script" not in html.lower()


# -- localization ---------------------------------------------------------------------------------


def test_missing_catalog_falls_back_to_source_strings(
    issue_cfg: Config, seeds_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render, "LOCALES_DIR", tmp_path)
    render.environment.cache_clear()
    try:
        html = _issue_html(issue_cfg, seeds_archive, "2024-W31", "ko")
    finally:
        render.environment.cache_clear()
    assert "What&#39;s New" in html or "What's New" in html
    assert "Unsubscribe" in html
    assert re.search(r"2024년 7월 29일\s*~\s*8월 4일", html)  # dates still follow the locale


def _messages(mo: bytes) -> dict[object, object]:
    """Message id -> translation of a compiled catalog."""

    def key(value: object) -> object:
        # Plural forms come back as lists.
        return tuple(value) if isinstance(value, list) else value

    return {key(m.id): key(m.string) for m in read_mo(io.BytesIO(mo)) if m.id}


def test_compiled_catalogs_match_their_sources() -> None:
    """The committed .mo files hold what `pybabel compile` makes of the .po files.

    Compared as parsed catalogs, not bytes: a .mo file also records the version of Babel that
    wrote it, which says nothing about the translations.
    """
    for lang in LANGS:
        folder = LOCALES / lang / "LC_MESSAGES"
        with (folder / "messages.po").open("rb") as fh:
            source = read_po(fh)
        compiled = io.BytesIO()
        write_mo(compiled, source)
        assert _messages((folder / "messages.mo").read_bytes()) == _messages(compiled.getvalue()), (
            f"{folder}/messages.mo is stale: run pybabel compile (see README, Translating)"
        )


def _extracted() -> set[str]:
    """Every message id the README's `pybabel extract` finds in the code and templates."""
    method_map = [
        ("newsletter/**.py", "python"),
        ("templates/**.html", "jinja2"),
        ("templates/**.txt", "jinja2"),
    ]
    options = {
        "templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"},
        "templates/**.txt": {"extensions": "jinja2.ext.i18n", "trimmed": "true"},
    }
    return {
        msg[0] if isinstance(msg, tuple) else msg
        for _, _, msg, *_ in extract_from_dir(str(ROOT), method_map, options)
    }


def test_the_template_catalog_holds_what_the_code_says_and_no_more() -> None:
    """A string the extractor cannot see (a gettext call inside an f-string) would be
    marked obsolete by the next `pybabel update`, and its translation lost."""
    with (LOCALES / "messages.pot").open("rb") as fh:
        template = {m.id[0] if isinstance(m.id, tuple) else m.id for m in read_po(fh) if m.id}
    extracted = _extracted()
    assert not template - extracted, (
        f"in messages.pot, not found in the code: {template - extracted}"
    )
    assert not extracted - template, (
        f"not in messages.pot (run pybabel extract): {extracted - template}"
    )


def test_every_interface_string_has_a_korean_translation() -> None:
    extracted = _extracted()
    with (LOCALES / "ko" / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        catalog = read_po(fh)
    missing = sorted(
        m for m in extracted if not catalog.get(m) or not all(_translated(catalog.get(m)))
    )
    assert not missing, f"not in the Korean catalog (run pybabel extract/update): {missing}"


def _translated(message: object) -> list[bool]:
    string = getattr(message, "string", "")
    strings = string if isinstance(string, tuple | list) else [string]
    return [bool(s) for s in strings]


# -- golden files -----------------------------------------------------------------------------------


def normalize_eml(data: bytes) -> bytes:
    """Drop what changes between runs: the date, the Message-ID and the MIME boundary."""
    text = data.decode("utf-8")  # the text part is 8bit into the outbox
    for boundary in set(re.findall(r'boundary="([^"]+)"', text)):
        text = text.replace(boundary, "BOUNDARY")
    text = re.sub(r"(?m)^Date: .*$", "Date: DATE", text)
    text = re.sub(r"(?m)^Message-ID: .*$", "Message-ID: <MESSAGE-ID>", text)
    return text.encode("utf-8")


def _check_golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("NEWSLETTER_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), (
        f"{path} is missing: NEWSLETTER_REGEN_GOLDEN=1 pytest tests/test_render.py"
    )
    assert data == path.read_bytes(), (
        f"{name} differs from the golden file; if the change is intended: "
        "NEWSLETTER_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_render.py -k golden"
    )


# The week's date range comes from Babel's CLDR data, whose spacing moves between releases
# (`7월 29일 ~ 8월 4일` in 2.18, `7월 29일~8월 4일` in 2.19): the goldens pin it through the
# lock, and this test holds its meaning whatever the spacing.
@pytest.mark.parametrize(
    ("lang", "pattern"),
    [
        ("ko", r"2024년\s*7월\s*29일\s*[~–-]\s*8월\s*4일"),
        ("en", r"Jul\s*29\s*[–-]\s*Aug\s*4,\s*2024"),
    ],
)
def test_issue_names_its_week_as_a_date_range(
    issue_cfg: Config, seeds_archive: Archive, lang: str, pattern: str
) -> None:
    rendered = render_issue(
        issue_cfg, build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W31")), lang
    )
    url, preferences = unsubscribe_url(issue_cfg, "tok"), preferences_url(issue_cfg, "tok")
    for body in (rendered.html_for(url, preferences), rendered.text_for(url, preferences)):
        assert re.search(pattern, body), f"no 29 July to 4 August range in the {lang} issue"


SUBJECTS = {
    ("2024-W01", "ko"): "[주간 HF 논문] 2024년 1주차: Improving Text Embeddings with Large… 외 7편",
    ("2024-W01", "en"): (
        "HF Papers weekly, 2024-W01: Improving Text Embeddings with Large… and 7 more"
    ),
    ("2024-W05", "ko"): "[주간 HF 논문] 2024년 5주차: OLMo 외 9편",
    ("2024-W05", "en"): "HF Papers weekly, 2024-W05: OLMo and 9 more",
    (
        "2024-W21",
        "ko",
    ): "[주간 HF 논문] 2024년 21주차: INDUS: Effective and Efficient Language… 외 4편",
    (
        "2024-W21",
        "en",
    ): "HF Papers weekly, 2024-W21: INDUS: Effective and Efficient Language… and 4 more",
    ("2024-W31", "ko"): "[주간 HF 논문] 2024년 31주차: Meltemi 외 9편",
    ("2024-W31", "en"): "HF Papers weekly, 2024-W31: Meltemi and 9 more",
}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("week", SEED_WEEKS)
def test_golden_issue(issue_cfg: Config, seeds_archive: Archive, week: str, lang: str) -> None:
    rendered = render_issue(
        issue_cfg, build_issue(issue_cfg, seeds_archive, IsoWeek.parse(week)), lang
    )
    url = unsubscribe_url(issue_cfg, GOLDEN_TOKEN)
    preferences = preferences_url(issue_cfg, GOLDEN_TOKEN)
    _check_golden(f"{week}.{lang}.html", rendered.html_for(url, preferences).encode("utf-8"))
    _check_golden(f"{week}.{lang}.txt", rendered.text_for(url, preferences).encode("utf-8"))
    message = message_template(issue_cfg, rendered).personalize(
        to_address="reader@example.com",
        to_name="독자",
        unsubscribe_token=GOLDEN_TOKEN,
        preferences_token=GOLDEN_TOKEN,
        mailto_token="goldenmailtotoken",
        message_id=GOLDEN_ID,
    )
    _check_golden(f"{week}.{lang}.eml", normalize_eml(message.data))
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert parsed["Subject"] == SUBJECTS[week, lang]


# -- web copy and CLI -----------------------------------------------------------------------------


def test_email_links_to_the_web_copy(issue_cfg: Config, seeds_archive: Archive) -> None:
    issue = build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W05"))
    assert (
        'href="https://news.example.org/issues/2024-W05.html"'
        in render_issue(issue_cfg, issue, "ko").html
    )
    assert (
        'href="https://news.example.org/issues/2024-W05.en.html"'
        in render_issue(issue_cfg, issue, "en").html
    )


SAMPLE = make_token(b"preview-test-key-of-at-least-32-bytes", "unsubscribe", 0)
SAMPLE_PREFERENCES = make_token(b"preview-test-key-of-at-least-32-bytes", "preferences", 0)


def _invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "preview-test-key-of-at-least-32-bytes")
    (tmp_path / "config.toml").write_text(
        'base_url = "https://news.example.org/"\n', encoding="utf-8"
    )
    result = CliRunner().invoke(main, ["preview", "--source", str(ROOT / "seeds"), *args])
    return result.exit_code, result.output


def test_cli_preview_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, output = _invoke(tmp_path, monkeypatch)
    assert code == 0, output
    assert output.strip() == str(Path("preview") / "2024-W31.ko.html")
    html = (tmp_path / "preview" / "2024-W31.ko.html").read_text(encoding="utf-8")
    # A working link: a real token, for subscriber 0, which the web app shows as a sample.
    assert f'href="https://news.example.org/unsubscribe/{SAMPLE}"' in html
    assert f'href="https://news.example.org/preferences/{SAMPLE_PREFERENCES}"' in html
    assert "urn:x-newsletter" not in html


def test_cli_preview_eml_and_web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, output = _invoke(
        tmp_path,
        monkeypatch,
        "--date",
        "2024-02-01",
        "--lang",
        "en",
        "--format",
        "eml",
        "--out",
        "x.eml",
        "--web",
    )
    assert code == 0, output
    assert output.splitlines()[0] == "x.eml"
    parsed = email.message_from_bytes(
        (tmp_path / "x.eml").read_bytes(), policy=email.policy.default
    )
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Subject"] == "HF Papers weekly, 2024-W05: OLMo and 9 more"
    assert (tmp_path / "public" / "issues" / "2024-W05.en.html").is_file()
    assert (tmp_path / "public" / "index.html").is_file()


def test_cli_preview_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, output = _invoke(tmp_path, monkeypatch, "--week", "2024-W21", "--format", "text")
    assert code == 0, output
    text = (tmp_path / "preview" / "2024-W21.ko.txt").read_text(encoding="utf-8")
    assert f"구독 취소:\nhttps://news.example.org/unsubscribe/{SAMPLE}\n" in text


def test_cli_preview_empty_week_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = _invoke(tmp_path, monkeypatch, "--week", "2024-W10")
    assert code == 1
    assert "error: no digests in week 2024-W10" in output
    assert not (tmp_path / "preview").exists()
    code, output = _invoke(tmp_path, monkeypatch, "--week", "2024-W10", "--date", "2024-01-02")
    assert code == 2 and "at most one of --week or --date" in output


def test_text_part_lines_fit_78_characters_and_keep_urls_whole(
    issue_cfg: Config, seeds_archive: Archive
) -> None:
    """RFC 5322's 78 characters a line (characters, Korean ones too), broken at spaces; a
    URL is never cut, and alone on its line when it is longer: the only longer lines."""
    unsubscribe = "https://news.example.org/unsubscribe/" + "u" * 60
    preferences = "https://news.example.org/preferences/" + "p" * 60
    long = long_week(10)
    issues = [
        build_issue(issue_cfg, seeds_archive, IsoWeek.parse(w)) for w in ("2024-W05", "2024-W31")
    ]
    issues.append(build_issue(issue_cfg, long, IsoWeek.of(long.digests[0].date)))
    for issue in issues:
        for lang in LANGS:
            rendered = render_issue(issue_cfg, issue, lang)
            text = rendered.text_for(unsubscribe, preferences)
            lines = text.splitlines()
            over = [line for line in lines if len(line) > 78]
            assert all(len(line.split()) == 1 for line in over), over
            assert any(len(line) > 70 for line in lines)  # filled, not broken early
            urls = [p.paper.url for p in issue.picks] + [p.paper.hf_url for p in issue.picks]
            urls += [rendered.web_url, f"{issue_cfg.site_url}subscribe"]
            for url in urls:
                assert any(url in line.split() for line in lines), url
            assert unsubscribe in lines and preferences in lines
