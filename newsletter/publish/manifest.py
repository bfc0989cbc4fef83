"""What each output was made of: the input hashes of the feeds and web pages, kept in a
manifest in ``cache_dir`` with the size and mtime each file had when written, so that an
output whose inputs and file are as recorded is not rendered again."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsletter.archive.cache_format import read_checked, write_checked
from newsletter.config import Config
from newsletter.publish.names import ATOM_NAME, JSON_NAME

if TYPE_CHECKING:
    from newsletter.archive.cache import Catalog
    from newsletter.publish.site import Lead
    from newsletter.select import IsoWeek

__all__ = ["FEEDS", "PAGES", "Manifest", "feed_inputs", "page_inputs"]

# The groups of outputs whose links the manifest follows: the daily feeds, which a start
# writes before listening, and the rest (pages and issues feeds), written after.
FEEDS, PAGES = "feeds", "pages"


@functools.cache
def _version() -> str:
    """The package's version, which every output depends on; asked when first needed (the
    package metadata is slow to read, and a start reads the manifest before it listens)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("newsletter")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return ""


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
    # Here, not at the top: a start reads the manifest before it listens, and needs no
    # renderer for that.
    from newsletter.publish import latex
    from newsletter.publish.render import LOCALES_DIR, templates_dir

    email = cfg.email
    return _hash(
        _version(),
        latex.REVISION,
        _files_hash([templates_dir()], "*"),
        _files_hash([LOCALES_DIR], "*.mo"),
        email.name,
        email.intro,
        email.contact,
        email.subject_template,
        email.postal_address,
        # The contact's {address}: pages show it in their footer.
        email.from_address,
        email.reply_to,
        str(email.thumbnails),
        repr(email.ko),
        repr(email.en),
        cfg.site_url,
        cfg.default_lang,
        str(cfg.top_n_weekly),
        str(cfg.top_n_daily),
    )


def feed_inputs(cfg: Config, catalog: Catalog) -> str:
    """What the feeds depend on: every digest (first appearances reach back to the start),
    the compiled catalogs (labels and words in the feed's language), the feed settings
    and the package version."""
    from newsletter.publish import latex
    from newsletter.publish.render import LOCALES_DIR

    return _hash(
        _version(),
        latex.REVISION,
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
    """Output path (relative to the public folder) -> [input hash, size, mtime_ns]; the
    lead papers of each week (``leads``: week -> [input hash, rows]), which the front page
    shows for every issue without loading every week's digests; and ``links``, the address
    the daily feeds (``feeds``) and the pages and issues feeds (``pages``) all link to
    ("" when unknown or mixed: a build for another address wrote some of them)."""

    path: Path
    public: Path
    entries: dict[str, list[object]] = field(default_factory=dict)
    leads: dict[str, list[object]] = field(default_factory=dict)
    dirty: bool = False
    links: dict[str, str] = field(default_factory=dict)
    # The address this process's outputs link to (cfg.site_url).
    address: str = ""

    @classmethod
    def load(cls, cfg: Config) -> Manifest:
        public = cfg.public_path
        key = hashlib.sha256(str(public.resolve()).encode()).hexdigest()[:16]
        path = cfg.cache_path / f"outputs-{key}.json"
        body = read_checked(path)
        body = body if isinstance(body, dict) else {}
        entries, leads = body.get("outputs", {}), body.get("leads", {})
        links = body.get("links", {})
        return cls(
            path,
            public,
            entries if isinstance(entries, dict) else {},
            leads if isinstance(leads, dict) else {},
            links={k: v for k, v in links.items() if isinstance(v, str)}
            if isinstance(links, dict)
            else {},
            address=cfg.site_url,
        )

    def stale(self, group: str) -> bool:
        """Whether the outputs of ``group`` (``feeds`` or ``pages``) may link elsewhere
        than this process's address, or be missing."""
        return self.links.get(group, "") != self.address

    def settle(self, group: str) -> None:
        """Every output of ``group`` was just found current or written for this address
        (their inputs hold the address)."""
        if self.links.get(group) != self.address:
            self.links[group] = self.address
            self.dirty = True

    def current(self, name: str, inputs: str) -> bool:
        """Whether ``name`` was written from ``inputs`` and is still as it was written."""
        recorded = self.entries.get(name)
        if not isinstance(recorded, list) or len(recorded) != 3 or recorded[0] != inputs:
            return False
        try:
            # os.stat on a joined string: the site's check runs for every page of every
            # daily job, where pathlib's path building cost more than the system call.
            st = os.stat(f"{self.public}{os.sep}{name}")
        except OSError:
            return False
        return [st.st_size, st.st_mtime_ns] == recorded[1:]

    def record(self, name: str, inputs: str) -> None:
        st = (self.public / name).stat()
        self.entries[name] = [inputs, st.st_size, st.st_mtime_ns]
        self.dirty = True
        group = FEEDS if name in (ATOM_NAME, JSON_NAME) else PAGES
        if self.links.get(group, "") != self.address:
            self.links[group] = ""  # some of them link here now, others maybe elsewhere

    def forget(self, name: str) -> None:
        """Drop what is recorded of a removed page (and of its week's lead papers)."""
        found = self.entries.pop(name, None) is not None
        if name.startswith("issues/"):
            week = name.removeprefix("issues/").split(".", 1)[0]
            found = self.leads.pop(week, None) is not None or found
        self.dirty = self.dirty or found

    def lead_rows(self, week: IsoWeek, inputs: str) -> list[Any] | None:
        recorded = self.leads.get(str(week))
        if isinstance(recorded, list) and len(recorded) == 2 and recorded[0] == inputs:
            rows = recorded[1]
            return rows if isinstance(rows, list) else None
        return None

    def record_leads(self, week: IsoWeek, inputs: str, leads: tuple[Lead, ...]) -> None:
        self.leads[str(week)] = [inputs, [lead.to_json() for lead in leads]]
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            body = {"outputs": self.entries, "leads": self.leads, "links": self.links}
            write_checked(self.path, body)
            self.dirty = False
