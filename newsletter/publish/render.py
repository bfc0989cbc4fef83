"""The weekly issue: selection -> localized, email-safe HTML and plain text.

One Jinja environment per interface language (templates + gettext + Babel filters). An
issue is rendered once per language; the only recipient-specific parts of the body, the
unsubscribe and preferences URLs, are rendered as unique markers that
:mod:`newsletter.mail.message` replaces per recipient, so personalizing never re-runs Jinja or
the CSS inliner.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from gettext import NullTranslations
from pathlib import Path
from typing import Any

import css_inline
import jinja2
import jinja2.bccache
from babel.dates import format_date, format_interval
from babel.numbers import format_decimal
from babel.support import Translations
from markupsafe import Markup

from newsletter.config import LANGS, Config
from newsletter.errors import NewsletterError
from newsletter.models import Pick, Section
from newsletter.publish import feed_content, inline, latex
from newsletter.select import IsoWeek, WeekIssue
from newsletter.shipped import shipped
from newsletter.words import wrap

log = logging.getLogger(__name__)

__all__ = [
    "LANGS",
    "RenderedIssue",
    "environment",
    "lead_line",
    "paper_view",
    "render_issue",
    "web_copy_url",
]

# Babel locale of each interface language.
LOCALES = {"ko": "ko_KR", "en": "en_US"}
LOCALES_DIR = Path(__file__).resolve().parents[1] / "locales"
DOMAIN = "messages"
# How many authors are named before "외 N명" / "and N more".
AUTHORS_SHOWN = 3
# The longest lead paper name a subject carries before it is cut.
LEAD_CHARS = 40


def N_(message: str) -> str:
    """Mark a string for extraction without translating it here."""
    return message


# Section labels found in the digests; each is looked up in the catalog at render time, so
# any other label is shown as written (a missing translation falls back to the source).
KNOWN_LABELS = (
    N_("What's New"),
    N_("Technical Details"),
    N_("Performance Highlights"),
    N_("Conclusion and Future Work"),
    N_("Limitations"),
    N_("Ethical Considerations"),
)


def templates_dir() -> Path:
    """The repository's ``templates/`` (a checkout or an editable install), else the copy
    the wheel ships inside the package."""
    return shipped("templates")


def translations_for(lang: str) -> NullTranslations:
    # Translations.load falls back to NullTranslations when the catalog is missing, and
    # gettext returns the source string for any message without a translation.
    return Translations.load(str(LOCALES_DIR), [LOCALES[lang], lang], DOMAIN)


# Babel's formatting is pure but slow (format_interval matches skeletons on every call,
# ~0.15 ms), and the front page formats every week's range and every lead's votes each time
# it is rendered: the same values, remembered.
@functools.lru_cache(maxsize=8192)
def _date(value: dt.date, fmt: str = "long", *, locale: str) -> str:
    return str(format_date(value, format=fmt, locale=locale))


@functools.lru_cache(maxsize=8192)
def _number(value: int | float, *, locale: str) -> str:
    return str(format_decimal(value, locale=locale))


@functools.lru_cache(maxsize=8192)
def _interval(start: dt.date, end: dt.date, skeleton: str = "yMMMd", *, locale: str) -> str:
    return str(format_interval(start, end, skeleton, locale=locale))


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Compiled templates kept between processes, in a private folder of the system's
    temporary directory, keyed by each template's source: a command that renders pages
    (a daily job, a send) starts without compiling every template again. A cache that
    cannot be written is only slower."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError as exc:
            log.debug("template cache not written: %s", exc)


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    try:
        return _BytecodeCache()
    except (OSError, RuntimeError) as exc:  # no usable temporary directory
        log.debug("no template cache: %s", exc)
        return None


@functools.cache
def environment(lang: str) -> jinja2.Environment:
    """The Jinja environment of one interface language: templates, gettext, Babel filters."""
    if lang not in LOCALES:
        raise NewsletterError(f"unknown language {lang!r}: expected one of {', '.join(LANGS)}")
    locale = LOCALES[lang]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        bytecode_cache=_bytecode_cache(),
        autoescape=jinja2.select_autoescape(["html", "xml"], default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    translations = translations_for(lang)
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    # Section labels come from the digests: plain gettext, so the result is still escaped
    # (the newstyle ``_()`` marks its result safe and %-formats it).
    env.filters["label"] = translations.gettext
    # A summary's own inline Markdown (links, bold, emphasis, code), escaped otherwise.
    env.filters["inline"] = inline.to_html
    env.filters["inline_text"] = inline.to_text
    env.filters["format_date"] = functools.partial(_date, locale=locale)
    env.filters["format_number"] = functools.partial(_number, locale=locale)
    env.globals["date_range"] = functools.partial(_interval, locale=locale)
    # ``추천 53`` / ``53 votes``, never broken across lines (the feeds' words).
    env.globals["votes"] = feed_content.words(lang).votes
    env.globals["lang"] = lang
    env.globals["locale"] = locale
    return env


# -- the issue ------------------------------------------------------------------------------


# -- rendering --------------------------------------------------------------------------------


# The markers of the personal URLs differ only here: one is found from the other.
_UNSUBSCRIBE_MARK = ":unsubscribe:"
_PREFERENCES_MARK = ":preferences:"


def _preferences_marker(marker: str) -> str:
    head, found, tail = marker.partition(_UNSUBSCRIBE_MARK)
    return f"{head}{_PREFERENCES_MARK}{tail}" if found else ""


@dataclass(frozen=True, slots=True)
class RenderedIssue:
    """An issue rendered for one language, CSS inlined.

    ``html`` and ``text`` hold ``marker`` wherever the recipient's unsubscribe URL goes,
    and :attr:`preferences_marker` wherever the preferences URL goes (if the templates link
    it); :meth:`html_for` and :meth:`text_for` substitute them (the web copy has neither).
    """

    week: IsoWeek
    lang: str
    subject: str
    html: str
    text: str
    preheader: str
    marker: str
    web_url: str

    @property
    def preferences_marker(self) -> str:
        """Made from ``marker``, so content frozen before the preferences page existed
        needs nothing stored besides it; empty for a marker of another shape."""
        return _preferences_marker(self.marker)

    def html_for(self, unsubscribe_url: str, preferences_url: str | None = None) -> str:
        escaped = None if preferences_url is None else html.escape(preferences_url, quote=True)
        return self._personal(self.html, html.escape(unsubscribe_url, quote=True), escaped)

    def text_for(self, unsubscribe_url: str, preferences_url: str | None = None) -> str:
        return self._personal(self.text, unsubscribe_url, preferences_url)

    def _personal(self, body: str, unsubscribe_url: str, preferences_url: str | None) -> str:
        body = body.replace(self.marker, unsubscribe_url)
        mark = self.preferences_marker
        if mark and mark in body:
            if preferences_url is None:
                raise ValueError("this issue links the preferences page: give preferences_url")
            body = body.replace(mark, preferences_url)
        return body


@dataclass(frozen=True, slots=True)
class _Block:
    """Consecutive summary points shown the same way: one labelled section, or a list."""

    label: str | None
    items: tuple[Section, ...]


def _blocks(sections: Sequence[Section]) -> list[_Block]:
    blocks: list[_Block] = []
    bullets: list[Section] = []
    for section in sections:
        if section.label:
            if bullets:
                blocks.append(_Block(None, tuple(bullets)))
                bullets = []
            blocks.append(_Block(section.label, (section,)))
        else:
            bullets.append(section)
    if bullets:
        blocks.append(_Block(None, tuple(bullets)))
    return blocks


@dataclass(frozen=True, slots=True)
class PaperView:
    """A ranked paper as the templates show it: the first authors and the summary blocks."""

    rank: int
    pick: Pick
    authors: tuple[str, ...]
    more_authors: int
    blocks: tuple[_Block, ...]


def paper_view(pick: Pick) -> PaperView:
    authors = pick.paper.authors
    return PaperView(
        rank=pick.rank,
        pick=pick,
        authors=authors[:AUTHORS_SHOWN],
        more_authors=max(len(authors) - AUTHORS_SHOWN, 0),
        blocks=tuple(_blocks(pick.paper.sections)),
    )


def short_title(title: str, limit: int = LEAD_CHARS) -> str:
    """The lead paper as a subject names it: ``Meltemi`` for ``Meltemi: The first open Large
    Language Model for Greek``; a title without such a name, cut at a word.

    A name in capitals only (``INDUS``) says little and makes a subject whose only Latin
    letters are capitals, which spam filters score as shouting: the title is used then."""
    name, colon, _ = title.partition(":")
    name = name.strip()
    if colon and name and len(name) <= limit and any(c.islower() for c in name):
        return name
    if len(title) <= limit:
        return title
    cut = title[:limit].rsplit(" ", 1)[0].rstrip(" ,;:-–—")
    return f"{cut or title[:limit]}…"


def subject_for(cfg: Config, issue: WeekIssue, lang: str) -> str:
    """The issue's subject in ``lang``, e.g. ``[주간 HF 논문] 2024년 31주차: Meltemi 외 9편``;
    ``issue`` as shown (:func:`~newsletter.publish.latex.shown_issue`)."""
    edition = cfg.email.edition(lang)
    title = short_title(issue.picks[0].paper.title)
    more = len(issue.picks) - 1
    lead = (
        translations_for(lang).ngettext(
            "%(title)s and %(num)d more", "%(title)s and %(num)d more", more
        )
        % {"title": title, "num": more}
        if more
        else title
    )
    week = issue.week
    return edition.subject_template.format(
        year=week.year,
        week=week.week,
        week_id=str(week),
        name=edition.name,
        lead=lead,
        title=title,
        count=len(issue.picks),
    )


def web_copy_name(week: IsoWeek, lang: str, default_lang: str) -> str:
    """``2024-W05.html`` for the default language, ``2024-W05.en.html`` for another."""
    return f"{week}.html" if lang == default_lang else f"{week}.{lang}.html"


def web_copy_url(cfg: Config, week: IsoWeek, lang: str) -> str:
    return f"{cfg.site_url}issues/{web_copy_name(week, lang, cfg.default_lang)}"


@functools.cache
def _inliner() -> css_inline.CSSInliner:
    # keep_at_rules: @media (narrow screens, dark mode) cannot be inlined and must survive.
    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False, minify_css=True)


def inline_css(document: str) -> str:
    return str(_inliner().inline(document))


def lead_line(lang: str, issue: WeekIssue) -> str:
    """``이번 주 추천 1위: Meltemi... 외 9편``: the email's preheader, what inboxes show beside
    the subject, and what a feed reader's list shows under an issue's title; ``issue`` as
    shown (:func:`~newsletter.publish.latex.shown_issue`)."""
    translations = translations_for(lang)
    top = issue.picks[0].paper.title
    more = len(issue.picks) - 1
    if not more:
        return translations.gettext("This week's most voted: %(title)s") % {"title": top}
    return translations.ngettext(
        "This week's most voted: %(title)s, and %(num)d more paper",
        "This week's most voted: %(title)s, and %(num)d more papers",
        more,
    ) % {"title": top, "num": more}


def render_issue(
    cfg: Config, issue: WeekIssue, lang: str, *, approve_url: str = ""
) -> RenderedIssue:
    """Render the email of ``issue`` for ``lang``: subject, inlined HTML, plain text and
    preheader (the website's copy is :mod:`newsletter.publish.site`'s). ``approve_url`` puts a
    draft notice with that link at the top (the editor's copy).
    """
    env = environment(lang)
    issue = latex.shown_issue(issue)
    marker = f"urn:x-newsletter{_UNSUBSCRIBE_MARK}{secrets.token_hex(8)}"
    papers = [paper_view(p) for p in issue.picks]
    preheader = lead_line(lang, issue)
    edition = cfg.email.edition(lang)
    context: dict[str, Any] = {
        "name": edition.name,
        "intro": edition.intro,
        "contact": edition.contact,
        "postal_address": cfg.email.postal_address,
        "thumbnails": cfg.email.thumbnails,
        "subscribe_url": f"{cfg.site_url}subscribe",
        # The papers' titles are English and their summaries Korean, whatever the page's
        # language: screen readers pick their voice by these.
        "title_lang": Markup(' lang="en"') if lang != "en" else "",
        "summary_lang": Markup(' lang="ko"') if lang != "ko" else "",
        "week": issue.week,
        "papers": papers,
        "preheader": preheader,
        "web_url": web_copy_url(cfg, issue.week, lang),
        "unsubscribe_url": marker,
        "preferences_url": _preferences_marker(marker),
        "approve_url": approve_url,
    }
    document = env.get_template("email/issue.html").render(context)
    # Wrapped for mail clients that show text as it comes; the personal URLs, longer than
    # their markers, each get a line of their own.
    text = wrap(
        env.get_template("email/issue.txt").render(context),
        alone=(marker, context["preferences_url"]),
    )
    inlined = inline_css(document)
    if marker not in inlined:
        raise AssertionError("the unsubscribe link was lost while rendering")  # pragma: no cover
    return RenderedIssue(
        week=issue.week,
        lang=lang,
        subject=subject_for(cfg, issue, lang),
        html=inlined,
        text=text,
        preheader=preheader,
        marker=marker,
        web_url=context["web_url"],
    )
