"""Incremental outputs: the feeds and the website (the weeks' web copies, a page per day and
the front page), rendered only when what they are made of changed.

Each output has an input hash: the content hashes of the digest files it shows (from the
parse cache), the templates and compiled catalogs, the settings it uses and the package
version. The hashes are kept in a manifest in ``cache_dir`` with the size and mtime each
file had when written; an output whose inputs and file are as recorded is not rendered at
all, and one rendered to the same bytes is not rewritten, so its mtime and ETag hold.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from newsletter.archive.cache import Catalog
from newsletter.config import Config
from newsletter.files import public_folder
from newsletter.models import Archive
from newsletter.pacing import Steps
from newsletter.publish import site
from newsletter.publish.feed import write_feeds
from newsletter.publish.issue_feed import feed_weeks, write_issue_feeds
from newsletter.publish.manifest import FEEDS, PAGES, Manifest, _hash, feed_inputs, page_inputs
from newsletter.publish.names import ATOM_NAME, ISSUES_ATOM_NAME, ISSUES_JSON_NAME, JSON_NAME
from newsletter.publish.pending import PendingPages
from newsletter.publish.public_files import remove_pages, write_if_changed
from newsletter.publish.render import LANGS, templates_dir
from newsletter.publish.search_index import INDEX_NAME, refresh_index
from newsletter.select import IsoWeek, NoIssueError, build_issue

log = logging.getLogger(__name__)

# The search page's script, beside its pages.
SCRIPT = "search.js"

__all__ = [
    "FEEDS",
    "PAGES",
    "Manifest",
    "SiteBuild",
    "build_site",
    "publish_weeks",
    "refresh_feeds",
    "refresh_issue_feeds",
]


def _feed_archive(cfg: Config, catalog: Catalog) -> Archive:
    """The digests the feeds need: the window's in full, earlier days as ids and votes only
    (they decide first appearances, never content)."""
    dates = catalog.dates()
    if not dates:
        return Archive((), catalog.problems)
    start = dates[-1] - dt.timedelta(days=cfg.feed_days - 1)
    window = catalog.load([d for d in dates if d >= start]).digests
    # Of the earlier days, only those showing a paper of the window can change an entry
    # (its id year, or an earlier selection); the others need not even be outlined.
    shown = {p.arxiv_id for d in window for p in d.papers}
    days = {
        day
        for entry in catalog.entries
        for day, papers in entry.days
        if day < start and any(arxiv_id in shown for arxiv_id, _ in papers)
    }
    earlier = catalog.outline(days).digests if days else ()
    return Archive((*earlier, *window), catalog.problems)


def refresh_feeds(cfg: Config, catalog: Catalog, manifest: Manifest | None = None) -> list[Path]:
    """``feed.atom`` and ``feed.json``, built only when their inputs changed."""
    own = manifest is None
    manifest = manifest or Manifest.load(cfg)
    inputs = feed_inputs(cfg, catalog)
    if not catalog.dates():
        return []
    written = []
    if not all(manifest.current(n, inputs) for n in (ATOM_NAME, JSON_NAME)):
        written = write_feeds(cfg, _feed_archive(cfg, catalog))
        for name in (ATOM_NAME, JSON_NAME):
            manifest.record(name, inputs)
    manifest.settle(FEEDS)
    if own:
        manifest.save()
    return written


def _week_days(week: IsoWeek) -> list[dt.date]:
    return [week.monday + dt.timedelta(days=i) for i in range(7)]


def _days_with_papers(catalog: Catalog) -> list[dt.date]:
    """Every day whose digests hold a paper, oldest first (from the summaries: no file is
    read)."""
    return sorted({day for entry in catalog.entries for day, papers in entry.days if papers})


def _write_page(cfg: Config, name: str, page: str) -> bool:
    """Write a page unless it already holds these bytes: an unchanged page keeps its mtime,
    so its ETag and Last-Modified hold."""
    path = cfg.public_path / name
    public_folder(path.parent)
    return write_if_changed(path, page.encode("utf-8"))


def _neighbours(items: list[Any]) -> dict[Any, site.Nav[Any]]:
    return {
        item: site.Nav(items[i - 1] if i else None, items[i + 1] if i + 1 < len(items) else None)
        for i, item in enumerate(items)
    }


@dataclass
class _Build:
    """One pass over the site: what its stages (the front page, the issues feeds, the
    weeks' copies, the days' pages) share. Every output is looked at first and the stale
    ones queued, in that order, so that the number of pages to render is known before the
    first one is."""

    cfg: Config
    catalog: Catalog
    manifest: Manifest
    stop: Stop | None
    pending: PendingPages | None = None
    progress: Steps | None = None
    common: str = field(init=False)
    # What to do, in order, with the pages each step renders (the issues feeds: none).
    queue: list[tuple[int, Callable[[], None]]] = field(default_factory=list)
    rendered: list[Path] = field(default_factory=list)
    unsaved: int = 0

    def __post_init__(self) -> None:
        self.common = page_inputs(self.cfg)

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def current(self, names: list[str], inputs: str) -> bool:
        if not all(self.manifest.current(name, inputs) for name in names):
            return False
        if self.pending is not None:
            for name in names:
                self.pending.done(name)
        return True

    def issue_feeds(self, today: dt.date) -> list[Path]:
        """The issues feeds (:func:`refresh_issue_feeds`), no longer pending once written."""
        written = refresh_issue_feeds(self.cfg, self.catalog, today, self.manifest)
        if self.pending is not None:
            self.pending.done(ISSUES_ATOM_NAME)
            self.pending.done(ISSUES_JSON_NAME)
        return written

    def write(self, name: str, page: str, inputs: str) -> None:
        _write_page(self.cfg, name, page)
        self.rendered.append(self.cfg.public_path / name)
        self.manifest.record(name, inputs)
        if self.pending is not None:
            self.pending.done(name)
        self.unsaved += 1
        if self.unsaved >= 200:  # a long build keeps its progress if stopped
            self.manifest.save()
            self.unsaved = 0

    def plan(self, weeks: list[IsoWeek], days: list[dt.date]) -> None:
        """Tell the web app which pages this pass writes (it answers 503 for them until
        they are written)."""
        if self.pending is None:
            return
        default, public = self.cfg.default_lang, self.cfg.public_path
        names = [site.index_file(lang, default) for lang in LANGS]
        names += [site.issue_path(week, lang, default) for week in weeks for lang in LANGS]
        names += [site.day_path(day, lang, default) for day in days for lang in LANGS]
        names += [ISSUES_ATOM_NAME, ISSUES_JSON_NAME]
        names += [site.page_name("search", lang, default) for lang in LANGS] + [SCRIPT]
        # The search index holds no link: pending only while missing, until the build ends.
        if not os.path.exists(f"{public}{os.sep}{INDEX_NAME}"):
            names.append(INDEX_NAME)
        self.pending.plan(names, lambda name: os.path.exists(f"{public}{os.sep}{name}"))

    def week_inputs(self, weeks: list[IsoWeek]) -> dict[IsoWeek, str]:
        """What each week's web copies are made of (its days' files, its neighbours)."""
        return {
            week: _hash(
                self.common, str(week), self.catalog.fingerprint(_week_days(week)), str(nav)
            )
            for week, nav in _neighbours(weeks).items()
        }

    def weeks(
        self,
        weeks: list[IsoWeek],
        days_of: dict[IsoWeek, list[dt.date]],
        week_inputs: dict[IsoWeek, str],
    ) -> None:
        """Queue each week whose web copies are stale."""
        cfg = self.cfg
        for week, nav in _neighbours(weeks).items():
            inputs = week_inputs[week]
            names = [site.issue_path(week, lang, cfg.default_lang) for lang in LANGS]
            if not self.current(names, inputs):
                job = functools.partial(self.week, week, days_of[week], nav, inputs)
                self.queue.append((len(LANGS), job))

    def week(self, week: IsoWeek, in_week: list[dt.date], nav: site.Nav[Any], inputs: str) -> None:
        cfg = self.cfg
        try:
            issue = build_issue(cfg, self.catalog.load(in_week), week)
        except NoIssueError:  # pragma: no cover - days_with_papers found a paper
            return
        for lang in LANGS:
            name = site.issue_path(week, lang, cfg.default_lang)
            self.write(name, site.render_issue_page(cfg, issue, lang, nav, in_week), inputs)
        self.manifest.record_leads(week, inputs, site.leads_of(issue))

    def days(self, days: list[dt.date], published: set[IsoWeek]) -> None:
        """Queue each day whose pages are stale, linked to their week's copy when it is
        published."""
        cfg, catalog = self.cfg, self.catalog
        for day, nav in _neighbours(days).items():
            week = IsoWeek.of(day)
            linked = week if week in published else None
            inputs = _hash(
                self.common,
                day.isoformat(),
                catalog.fingerprint([day]),
                str(nav),
                str(linked or ""),
            )
            names = [site.day_path(day, lang, cfg.default_lang) for lang in LANGS]
            if not self.current(names, inputs):
                job = functools.partial(self.day, day, nav, linked, inputs)
                self.queue.append((len(LANGS), job))

    def day(self, day: dt.date, nav: site.Nav[Any], week: IsoWeek | None, inputs: str) -> None:
        cfg = self.cfg
        digest = self.catalog.load([day]).by_date(day)
        if digest is None:  # pragma: no cover - the summary said it was there
            return
        for lang in LANGS:
            page = site.render_day_page(cfg, digest, lang, nav, week)
            self.write(site.day_path(day, lang, cfg.default_lang), page, inputs)

    def render(self) -> bool:
        """Do what is queued, telling ``progress`` in pages; False when stopped."""
        total = sum(pages for pages, _ in self.queue)
        done = 0
        for pages, job in self.queue:
            if self.progress is not None and total:
                self.progress(done, total)
            # The issues feeds (no page) follow the front page at once: a stop waits for them.
            if pages and self.stopped():
                return False
            job()
            done += pages
        if self.progress is not None and total:
            self.progress(total, total)
        return True

    def front_page(
        self, weeks: list[IsoWeek], week_inputs: dict[IsoWeek, str], days: list[dt.date]
    ) -> None:
        """Queue the front page, in each language, when stale: the latest days and every
        week's leads."""
        cfg = self.cfg
        inputs = _hash(self.common, *map(str, days[-site.RECENT_DAYS :]), *week_inputs.values())
        names = [site.index_file(lang, cfg.default_lang) for lang in LANGS]
        if self.current(names, inputs):
            return

        def render() -> None:
            catalog, manifest = self.catalog, self.manifest
            entries = [
                site.IssueEntry(week, _leads(cfg, catalog, manifest, week, week_inputs[week]))
                for week in reversed(weeks)
            ]
            recent = list(reversed(days))
            for lang, name in zip(LANGS, names, strict=True):
                self.write(name, site.render_index(cfg, lang, entries, recent), inputs)

        self.queue.append((len(LANGS), render))

    def search_page(self) -> None:
        """Queue the search page, in each language, and its script, when stale."""
        cfg = self.cfg
        names = [site.page_name("search", lang, cfg.default_lang) for lang in LANGS]
        if self.current([*names, SCRIPT], self.common):
            return

        def render() -> None:
            for lang, name in zip(LANGS, names, strict=True):
                self.write(name, site.render_search(cfg, lang), self.common)
            # Not a page: written beside them, without counting as one.
            _write_page(cfg, SCRIPT, (templates_dir() / "site" / SCRIPT).read_text("utf-8"))
            self.manifest.record(SCRIPT, self.common)

        self.queue.append((len(LANGS), render))


def publish_weeks(
    cfg: Config,
    catalog: Catalog,
    today: dt.date,
    manifest: Manifest | None = None,
    stop: Stop | None = None,
    *,
    include: Iterable[IsoWeek] = (),
    feeds: list[Path] | None = None,
    pending: PendingPages | None = None,
    progress: Steps | None = None,
) -> list[Path]:
    """The website from the archive as it stands: the front page and the issues feeds
    first (they are what a visitor and a reader ask for first), then the web copy of every
    finished week (and of the weeks in ``include``, finished or not, and of any week whose
    copy is already published) and a page per day. Pages of days and weeks the archive no
    longer holds are removed. Each page is rendered only when what it shows changed (or the
    page is gone), and written only when its bytes changed. Returns the pages rendered (and
    adds the issues feeds written to ``feeds``, if given). A set ``stop`` ends a long build
    between two pages; what is done stays recorded. ``pending`` learns which pages are
    still to come, and that none is once the pass ends; ``progress`` is told the pages
    rendered and the pages to render."""
    own = manifest is None
    build = _Build(cfg, catalog, manifest or Manifest.load(cfg), stop, pending, progress)
    weeks: list[IsoWeek] = []
    try:
        if not _publish(build, today, set(include), weeks, feeds if feeds is not None else []):
            log.info("stopped writing web pages; the next start carries on")
    finally:
        if pending is not None:
            pending.finish()
        if own:
            build.manifest.save()
    rendered = build.rendered
    if rendered:
        log.info(
            "rendered %d web pages: %d weeks' copies of %d, %d days",
            len(rendered),
            len([p for p in rendered if p.parent.name == "issues"]) // len(LANGS),
            len(weeks),
            len([p for p in rendered if p.parent.name == "days"]) // len(LANGS),
        )
    return rendered


def _publish(
    build: _Build, today: dt.date, include: set[IsoWeek], weeks: list[IsoWeek], feeds: list[Path]
) -> bool:
    """The stages of :func:`publish_weeks` (``weeks`` filled with the weeks published);
    False when stopped."""
    cfg, catalog = build.cfg, build.catalog
    days = _days_with_papers(catalog)
    days_of: dict[IsoWeek, list[dt.date]] = {}
    for day in days:
        days_of.setdefault(IsoWeek.of(day), []).append(day)
    public, default = cfg.public_path, cfg.default_lang
    weeks += sorted(
        w
        for w in days_of
        if w.sunday < today
        or w in include
        or (public / site.issue_path(w, default, default)).is_file()
    )
    build.plan(weeks, days)
    week_inputs = build.week_inputs(weeks)
    if build.stopped():
        return False
    build.front_page(weeks, week_inputs, days)
    build.queue.append((0, lambda: feeds.extend(build.issue_feeds(today))))
    build.search_page()
    build.weeks(weeks, days_of, week_inputs)
    build.days(days, set(weeks))
    if not build.render():
        return False
    if not refresh_index(catalog, build.manifest, days, build.stopped):
        return False
    if not any(entry.sha256.startswith("!") for entry in catalog.entries):
        # Only from an archive read whole: a folder that cannot be read for a moment
        # must not take its pages with it.
        for name in remove_pages(cfg.public_path, set(days), set(days_of)):
            build.manifest.forget(name)
    build.manifest.settle(PAGES)
    return True


def refresh_issue_feeds(
    cfg: Config, catalog: Catalog, today: dt.date, manifest: Manifest | None = None
) -> list[Path]:
    """``issues.atom`` and ``issues.json`` (the latest finished weeks' issues), built only
    when their inputs changed; beside the web copies they link to."""
    own = manifest is None
    manifest = manifest or Manifest.load(cfg)
    if not catalog.dates():
        return []
    shown = {IsoWeek.of(day) for entry in catalog.entries for day, papers in entry.days if papers}
    weeks = feed_weeks(shown, today)
    days = [day for week in weeks for day in _week_days(week)]
    inputs = _hash(
        page_inputs(cfg),
        cfg.language,
        cfg.tag_domain,
        cfg.timezone,
        cfg.schedule.weekly_at,
        cfg.author_name,
        *map(str, weeks),
        catalog.fingerprint(days),
    )
    names = (ISSUES_ATOM_NAME, ISSUES_JSON_NAME)
    if all(manifest.current(name, inputs) for name in names):
        return []
    written = write_issue_feeds(cfg, catalog.load(days), today)
    for name in names:
        manifest.record(name, inputs)
    if own:
        manifest.save()
    return written


def _leads(
    cfg: Config, catalog: Catalog, manifest: Manifest, week: IsoWeek, inputs: str
) -> tuple[site.Lead, ...]:
    """The week's lead papers: as recorded when its page was rendered, else from its digests."""
    rows = manifest.lead_rows(week, inputs)
    if rows is not None:
        try:
            return tuple(site.Lead.from_json(row) for row in rows)
        except (TypeError, ValueError):
            pass  # a damaged record: computed again below
    leads = site.leads_of(build_issue(cfg, catalog.load(_week_days(week)), week))
    manifest.record_leads(week, inputs, leads)
    return leads


class Stop(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class SiteBuild:
    """What one site build wrote: the feed files, and the web pages rendered."""

    feeds: list[Path]
    pages: list[Path]


def build_site(
    cfg: Config,
    catalog: Catalog,
    today: dt.date,
    *,
    include: Iterable[IsoWeek] = (),
    stop: Stop | None = None,
    progress: Steps | None = None,
) -> SiteBuild:
    """The one build of the public folder, for the daily job, ``newsletter feed``, the
    weekly job and ``send``: the daily feeds, the web copy of every finished week (and of
    the weeks in ``include``, finished or not), the day pages, the front page and the
    issues feeds, each only when its inputs changed, from the archive as it stands.
    ``progress`` is told the web pages rendered and the pages to render."""
    manifest = Manifest.load(cfg)
    try:
        feeds = refresh_feeds(cfg, catalog, manifest)
        pages = publish_weeks(
            cfg, catalog, today, manifest, stop, include=include, feeds=feeds, progress=progress
        )
    finally:
        manifest.save()
    return SiteBuild(feeds, pages)
