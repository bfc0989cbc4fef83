"""Incremental outputs: the feeds and the weeks' web copies, rendered only when what they
are made of changed.

Each output has an input hash: the content hashes of the digest files it shows (from the
parse cache), the templates and compiled catalogs, the settings it uses and the package
version. The hashes are kept in a manifest in ``cache_dir`` with the size and mtime each
file had when written; an output whose inputs and file are as recorded is not rendered at
all, and one rendered to the same bytes is not rewritten, so its mtime and ETag hold.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Protocol

from .cache import Catalog, read_checked, write_checked
from .config import Config
from .feed import ATOM_NAME, JSON_NAME, write_feeds
from .issue_feed import ISSUES_ATOM_NAME, ISSUES_JSON_NAME, feed_weeks, write_issue_feeds
from .models import Archive
from .render import (
    LANGS,
    LOCALES_DIR,
    NoIssueError,
    build_issue,
    publish_issue,
    templates_dir,
    web_copy_name,
    write_index,
)
from .select import IsoWeek

log = logging.getLogger(__name__)

__all__ = ["Manifest", "publish_weeks", "refresh_feeds", "refresh_issue_feeds", "refresh_site"]

try:
    VERSION = version("newsletter")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    VERSION = ""


def _hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _files_hash(folders: Iterable[Path], pattern: str) -> str:
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob(pattern)):
            if path.is_file():
                digest.update(str(path.relative_to(folder)).encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def page_inputs(cfg: Config) -> str:
    """What every web copy depends on besides its papers: templates, catalogs, the settings
    the templates and file names use, and the package version."""
    email = cfg.email
    return _hash(
        VERSION,
        _files_hash([templates_dir()], "*"),
        _files_hash([LOCALES_DIR], "*.mo"),
        email.name,
        email.intro,
        email.contact,
        email.subject_template,
        email.postal_address,
        str(email.thumbnails),
        repr(email.ko),
        repr(email.en),
        cfg.site_url,
        cfg.default_lang,
        str(cfg.top_n_weekly),
    )


def feed_inputs(cfg: Config, catalog: Catalog) -> str:
    """What the feeds depend on: every digest (first appearances reach back to the start),
    the compiled catalogs (labels and words in the feed's language), the feed settings
    and the package version."""
    return _hash(
        VERSION,
        catalog.fingerprint(),
        _files_hash([LOCALES_DIR], "*.mo"),
        cfg.language,
        cfg.site_url,
        cfg.site_title,
        cfg.site_subtitle,
        cfg.author_name,
        cfg.tag_domain,
        cfg.timezone,
        cfg.feed_time,
        str(cfg.feed_days),
        str(cfg.top_n_daily),
    )


@dataclass
class Manifest:
    """Output path (relative to the public folder) -> [input hash, size, mtime_ns]."""

    path: Path
    public: Path
    entries: dict[str, list[object]] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, cfg: Config) -> Manifest:
        public = cfg.public_path
        key = hashlib.sha256(str(public.resolve()).encode()).hexdigest()[:16]
        path = cfg.cache_path / f"outputs-{key}.json"
        body = read_checked(path)
        entries = body.get("outputs", {}) if isinstance(body, dict) else {}
        return cls(path, public, entries if isinstance(entries, dict) else {})

    def current(self, name: str, inputs: str) -> bool:
        """Whether ``name`` was written from ``inputs`` and is still as it was written."""
        recorded = self.entries.get(name)
        if not isinstance(recorded, list) or len(recorded) != 3 or recorded[0] != inputs:
            return False
        try:
            st = (self.public / name).stat()
        except OSError:
            return False
        return [st.st_size, st.st_mtime_ns] == recorded[1:]

    def record(self, name: str, inputs: str) -> None:
        st = (self.public / name).stat()
        self.entries[name] = [inputs, st.st_size, st.st_mtime_ns]
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            write_checked(self.path, {"outputs": self.entries})
            self.dirty = False


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
    if not catalog.dates() or all(manifest.current(n, inputs) for n in (ATOM_NAME, JSON_NAME)):
        return []
    written = write_feeds(cfg, _feed_archive(cfg, catalog))
    for name in (ATOM_NAME, JSON_NAME):
        manifest.record(name, inputs)
    if own:
        manifest.save()
    return written


def _week_days(week: IsoWeek) -> list[dt.date]:
    return [week.monday + dt.timedelta(days=i) for i in range(7)]


def publish_weeks(
    cfg: Config,
    catalog: Catalog,
    today: dt.date,
    manifest: Manifest | None = None,
    stop: Stop | None = None,
) -> list[Path]:
    """The web copy of every finished week whose inputs changed (or whose page is gone),
    ``index.html`` when the list of pages or its inputs changed, and the issues feeds
    that link to them. A set ``stop`` ends a long build between two weeks; what is done
    stays recorded."""
    own = manifest is None
    manifest = manifest or Manifest.load(cfg)
    common = page_inputs(cfg)
    weeks = sorted({IsoWeek.of(day) for day in catalog.dates()})
    rendered: list[Path] = []
    published: list[str] = []
    for week in weeks:
        if stop is not None and stop.is_set():
            log.info("stopped writing web copies; the next start carries on")
            break
        if week.sunday >= today:
            continue
        days = _week_days(week)
        inputs = _hash(common, str(week), catalog.fingerprint(days))
        names = [f"issues/{web_copy_name(week, lang, cfg.default_lang)}" for lang in LANGS]
        published.append(str(week))
        if all(manifest.current(name, inputs) for name in names):
            continue
        try:
            issue = build_issue(cfg, catalog.load(days), week)
        except NoIssueError:
            published.pop()
            continue  # days whose digests hold no paper
        rendered.extend(publish_issue(cfg, issue, index=False))
        for name in names:
            manifest.record(name, inputs)
        if len(rendered) % 100 == 0:
            manifest.save()  # a long first build keeps its progress if stopped
    index_inputs = _hash(common, *published)
    if rendered or not manifest.current("index.html", index_inputs):
        write_index(cfg)
        manifest.record("index.html", index_inputs)
    if stop is None or not stop.is_set():
        refresh_issue_feeds(cfg, catalog, today, manifest)
    if own:
        manifest.save()
    if rendered:
        log.info("rendered %d web copies of %d weeks", len(rendered), len(published))
    return rendered


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


class Stop(Protocol):
    def is_set(self) -> bool: ...


def refresh_site(cfg: Config, catalog: Catalog, today: dt.date) -> None:
    """The feeds and the finished weeks' web copies, from the archive as it stands."""
    manifest = Manifest.load(cfg)
    try:
        refresh_feeds(cfg, catalog, manifest)
        publish_weeks(cfg, catalog, today, manifest)
    finally:
        manifest.save()
