"""The website: the front page, each issue's web copy, a page per day, and the 404 page.

Every page of the site, the subscription pages included, shares one layout
(``templates/site/base.html``): the same header with a language switch, feed
autodiscovery, favicon and footer. A page exists once per interface language, and the
language is in its address: ``2024-W31.html`` in ``default_lang``, ``2024-W31.en.html``
in the other; dynamic pages take ``?lang=en``. Neither a cookie nor Accept-Language ever
picks it. Summaries stay Korean in every language, marked ``lang="ko"`` where the page
is not.

Pure functions of their inputs: nothing here reads the clock or writes a file
(:mod:`newsletter.publish.outputs` decides what to write, and when).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from newsletter.config import LANGS, Config
from newsletter.models import Digest, Pick
from newsletter.publish import inline, latex
from newsletter.publish.render import environment, paper_view, web_copy_name
from newsletter.select import IsoWeek, WeekIssue, top_daily

__all__ = [
    "LANG_NAMES",
    "LEADS",
    "IssueEntry",
    "Layout",
    "Lead",
    "Nav",
    "day_path",
    "issue_path",
    "layout",
    "leads_of",
    "render_building",
    "render_day_page",
    "render_index",
    "render_issue_page",
    "render_not_found",
    "render_search",
    "robots_txt",
    "search_path",
]

# Each language's name in itself: the switch speaks the language it leads to.
LANG_NAMES = {"ko": "한국어", "en": "English"}
# Papers of each issue the front page shows.
LEADS = 3
# Link previews (Open Graph, Twitter cards) cut descriptions to about this length.
DESCRIPTION_CHARS = 160
# Days linked from the front page.
RECENT_DAYS = 7

T = TypeVar("T")


# -- addresses ---------------------------------------------------------------------------------


def page_name(stem: str, lang: str, default_lang: str) -> str:
    return f"{stem}.html" if lang == default_lang else f"{stem}.{lang}.html"


def issue_path(week: IsoWeek, lang: str, default_lang: str) -> str:
    """``issues/2024-W31.html``, relative to the site's base URL."""
    return f"issues/{web_copy_name(week, lang, default_lang)}"


def day_path(day: dt.date, lang: str, default_lang: str) -> str:
    """``days/2024-07-31.html``, relative to the site's base URL."""
    return f"days/{page_name(day.isoformat(), lang, default_lang)}"


def index_path(lang: str, default_lang: str) -> str:
    """The front page: the base URL itself in the default language."""
    return "" if lang == default_lang else page_name("index", lang, default_lang)


def index_file(lang: str, default_lang: str) -> str:
    return index_path(lang, default_lang) or "index.html"


def search_path(lang: str, default_lang: str) -> str:
    """``search.html``: the search page, which reads ``?q=``."""
    return page_name("search", lang, default_lang)


def subscribe_path(lang: str, default_lang: str) -> str:
    return "subscribe" if lang == default_lang else f"subscribe?lang={lang}"


# -- the layout every page shares ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Switch:
    """A link to this page in another language."""

    lang: str
    label: str
    url: str


@dataclass(frozen=True, slots=True)
class Card:
    """What a link preview shows (Open Graph and Twitter card tags)."""

    title: str
    description: str
    image: str = ""
    kind: str = "website"


@dataclass(frozen=True, slots=True)
class Layout:
    """What ``site/base.html`` needs besides the page's own content."""

    lang: str
    default_lang: str
    name: str
    site_url: str
    home_url: str
    subscribe_url: str
    subscribe_action: str
    switch: tuple[Switch, ...]
    # Absolute address of this page in each language: canonical and hreflang links. Empty
    # for pages that are nobody's to link to (404, pages behind a token).
    alternates: Mapping[str, str]
    contact: str
    card: Card | None = None

    @property
    def canonical(self) -> str:
        return self.alternates.get(self.lang, "")

    @property
    def search_url(self) -> str:
        return self.site_url + search_path(self.lang, self.default_lang)

    def feed(self, name: str) -> str:
        return self.site_url + name

    def day_url(self, day: dt.date) -> str:
        return self.site_url + day_path(day, self.lang, self.default_lang)

    def issue_url(self, week: IsoWeek) -> str:
        return self.site_url + issue_path(week, self.lang, self.default_lang)


def layout(
    cfg: Config,
    lang: str,
    paths: Mapping[str, str],
    *,
    public: bool = True,
    card: Card | None = None,
) -> Layout:
    """The layout of a page whose address in language L is ``paths[L]``: relative to the
    base URL, or a query (``?lang=en``) for a dynamic page. ``public`` pages get canonical
    and hreflang links."""
    site = cfg.site_url
    default = cfg.default_lang

    def absolute(path: str) -> str:
        return path if path.startswith("?") else site + path

    return Layout(
        lang=lang,
        default_lang=default,
        name=cfg.email.edition(lang).name,
        site_url=site,
        home_url=site + index_path(lang, default),
        subscribe_url=site + subscribe_path(lang, default),
        subscribe_action=f"{site}subscribe?lang={lang}",
        switch=tuple(
            Switch(other, LANG_NAMES.get(other, other), absolute(paths[other]))
            for other in LANGS
            if other != lang and other in paths
        ),
        alternates={other: absolute(path) for other, path in paths.items()} if public else {},
        contact=cfg.email.edition(lang).contact,
        card=card,
    )


def query_paths(langs: Iterable[str] = LANGS) -> dict[str, str]:
    """The addresses of a dynamic page in each language: its own URL with ``?lang=``."""
    return {lang: f"?lang={lang}" for lang in langs}


# -- what the pages show -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Nav(Generic[T]):
    """The neighbours of a page in its series (issues, days): either may be missing."""

    previous: T | None = None
    next: T | None = None


@dataclass(frozen=True, slots=True)
class Lead:
    """One of an issue's top papers, as the front page shows it."""

    rank: int
    arxiv_id: str
    title: str
    votes: int | None
    thumbnail: str

    def to_json(self) -> list[Any]:
        return [self.rank, self.arxiv_id, self.title, self.votes, self.thumbnail]

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> Lead:
        rank, arxiv_id, title, votes, thumbnail = row
        return cls(int(rank), str(arxiv_id), str(title), votes, str(thumbnail))


@dataclass(frozen=True, slots=True)
class IssueEntry:
    week: IsoWeek
    leads: tuple[Lead, ...]


def _thumbnail(pick: Pick) -> str:
    media = pick.paper.media
    return media.url if media is not None and media.kind == "image" else ""


def leads_of(issue: WeekIssue, n: int = LEADS) -> tuple[Lead, ...]:
    return tuple(
        Lead(p.rank, p.paper.arxiv_id, p.paper.title, p.votes, _thumbnail(p))
        for p in latex.shown_picks(issue.picks[:n])
    )


def _describe(pick: Pick) -> str:
    """The lead paper in one line: its title and the start of its first summary point."""
    point = inline.to_text(pick.paper.first_point()).strip()
    text = f"{pick.paper.title}: {point}" if point else pick.paper.title
    if len(text) <= DESCRIPTION_CHARS:
        return text
    return text[: DESCRIPTION_CHARS - 1].rstrip() + "…"


def _image(picks: Sequence[Pick]) -> str:
    """The lead paper's thumbnail, else the first paper with one."""
    return next((url for url in map(_thumbnail, picks) if url), "")


def _render(lang: str, template: str, **context: Any) -> str:
    return environment(lang).get_template(template).render(context)


def render_issue_page(
    cfg: Config, issue: WeekIssue, lang: str, nav: Nav[IsoWeek], days: Sequence[dt.date]
) -> str:
    """The web copy of ``issue`` in ``lang``: its papers, the days it gathers, the issues
    before and after it, and a call to subscribe."""
    default = cfg.default_lang
    issue = latex.shown_issue(issue)
    paths = {other: issue_path(issue.week, other, default) for other in LANGS}
    card = Card("", _describe(issue.picks[0]), _image(issue.picks), "article")
    return _render(
        lang,
        "site/issue.html",
        site=layout(cfg, lang, paths, card=card),
        intro=cfg.email.edition(lang).intro,
        week=issue.week,
        papers=[paper_view(p) for p in issue.picks],
        nav=nav,
        days=list(days),
    )


def render_day_page(
    cfg: Config, digest: Digest, lang: str, nav: Nav[dt.date], week: IsoWeek | None
) -> str:
    """The day's top ``top_n_daily`` papers; ``week`` names its issue when that is published."""
    default = cfg.default_lang
    picks = latex.shown_picks(top_daily(digest, cfg.top_n_daily))
    paths = {other: day_path(digest.date, other, default) for other in LANGS}
    card = Card("", _describe(picks[0]) if picks else "", _image(picks), "article")
    return _render(
        lang,
        "site/day.html",
        site=layout(cfg, lang, paths, card=card),
        day=digest.date,
        papers=[paper_view(p) for p in picks],
        total=len(digest.papers),
        nav=nav,
        week=week,
    )


def render_index(
    cfg: Config, lang: str, issues: Sequence[IssueEntry], days: Sequence[dt.date]
) -> str:
    """The front page: the latest issue featured, the latest days, then every issue by year.
    ``issues`` and ``days`` newest first."""
    default = cfg.default_lang
    paths = {other: index_path(other, default) for other in LANGS}
    image = (
        next((lead.thumbnail for lead in issues[0].leads if lead.thumbnail), "") if issues else ""
    )
    edition = cfg.email.edition(lang)
    card = Card(edition.name, edition.intro, image)
    years: list[tuple[int, list[IssueEntry]]] = []
    for entry in issues:
        if not years or years[-1][0] != entry.week.year:
            years.append((entry.week.year, []))
        years[-1][1].append(entry)
    return _render(
        lang,
        "site/index.html",
        site=layout(cfg, lang, paths, card=card),
        intro=edition.intro,
        latest=issues[0] if issues else None,
        years=years,
        days=list(days[:RECENT_DAYS]),
    )


def render_not_found(cfg: Config, lang: str) -> str:
    return _render(lang, "site/not_found.html", site=layout(cfg, lang, query_paths(), public=False))


def render_search(cfg: Config, lang: str) -> str:
    """The search page (its results come from ``search.js`` and the index in ``search/``)."""
    paths = {other: search_path(other, cfg.default_lang) for other in LANGS}
    return _render(lang, "site/search.html", site=layout(cfg, lang, paths))


def render_building(cfg: Config, lang: str) -> str:
    """The page answered (with 503) for a page a build in progress is about to write."""
    return _render(lang, "site/building.html", site=layout(cfg, lang, query_paths(), public=False))


def robots_txt(cfg: Config) -> str:
    """Crawlers may read the site, not the pages behind a token (they act for a person)."""
    from urllib.parse import urlsplit

    root = urlsplit(cfg.site_url).path or "/"
    private = ("confirm/", "unsubscribe/", "approve/", "preferences/")
    lines = ["User-agent: *", *(f"Disallow: {root}{path}" for path in private), ""]
    return "\n".join(lines)
