"""Where digests come from: a folder, or a URL template fetched over HTTP; and which folders
are read (the shipped samples only until the site has digests of its own).

A folder source is read as it is. A URL source (``source = "https://.../{date:%Y/%m/%d}.md"``)
is fetched one day at a time, and every digest that parses is stored in ``archive_dir``
before anything uses it, so the archive never depends on the source staying up. A body
that does not parse is kept in ``rejected/`` beside the archive with the parser's error.

HTTP answers: 404 (or 410) means "not published yet"; 5xx, 429, timeouts and connection
errors are retried a few times with backoff; any other status is reported and left to the
next scheduled try. httpx is used for its async client with per-phase timeouts; the
standard library has no async HTTP client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from newsletter.archive.cache import Catalog, catalog
from newsletter.archive.digest import DigestError, parse_bytes
from newsletter.config import Config
from newsletter.files import PRIVATE_FILE, write_file
from newsletter.http import RetryPolicy
from newsletter.models import Archive
from newsletter.shipped import SAMPLE_ARCHIVE, shipped
from newsletter.words import count

log = logging.getLogger(__name__)

__all__ = [
    "FetchOptions",
    "IngestResult",
    "archive_folders",
    "digest_url",
    "fetch_digest",
    "ingest_day",
    "load_local_archive",
    "local_catalog",
    "reads_samples",
    "rejected_path",
]

Outcome = Literal["present", "stored", "missing", "unavailable", "rejected"]
FOUND: frozenset[Outcome] = frozenset({"present", "stored"})


@dataclass(frozen=True)
class FetchOptions(RetryPolicy):
    """How hard to try one fetch: ``attempts`` in all, waiting ``backoff``, then twice as
    long, between them (never less than a 429's ``Retry-After``)."""

    attempts: int = 4
    backoff: float = 2.0
    timeout: float = 20.0
    connect_timeout: float = 5.0


@dataclass(frozen=True)
class IngestResult:
    """What became of one day: ``present`` (already in the archive), ``stored`` (fetched
    and kept), ``missing`` (not published yet), ``unavailable`` (the source failed),
    ``rejected`` (fetched but unreadable; kept aside at ``path``)."""

    day: dt.date
    outcome: Outcome
    detail: str
    path: Path | None = None

    @property
    def found(self) -> bool:
        return self.outcome in FOUND


def digest_url(template: str, day: dt.date) -> str:
    return template.format(date=day)


def rejected_path(cfg: Config) -> Path:
    """Unreadable bodies go here, beside (never inside) the archive folder."""
    return cfg.archive_path.parent / "rejected"


def archive_folders(cfg: Config) -> list[Path]:
    """The folders digests are read from: the source folder (unless the source is a URL)
    and the stored archive; the shipped samples only while the archive holds no digest of
    the site's own."""
    return _folders(cfg)[0]


def _folders(cfg: Config) -> tuple[list[Path], Catalog | None]:
    """:func:`archive_folders`, and the archive's catalog when it had to be read to tell."""
    folders: list[Path] = []
    if not cfg.source_is_url:
        folders.append(cfg.source_path)
    archive_dir = cfg.archive_path
    if archive_dir.is_dir() and (
        cfg.source_is_url or archive_dir.resolve() != cfg.source_path.resolve()
    ):
        folders.append(archive_dir)
    if len(folders) > 1 and reads_samples(cfg):
        own = catalog(cfg.cache_path, [archive_dir])
        if any(entry.days for entry in own.entries):
            return [archive_dir], own
    return folders, None


def reads_samples(cfg: Config) -> bool:
    """Whether the source is the sample archive shipped with the package (a site made by
    ``newsletter init`` reads it until it has digests of its own)."""
    if cfg.source_is_url:
        return False
    try:
        return cfg.source_path.resolve() == shipped(SAMPLE_ARCHIVE).resolve()
    except OSError:
        return False


# The folders each cache_dir was last read from, so that the log says so when they change
# (the first read of a process, the first digest of a site's own replacing the samples).
_READ: dict[Path, tuple[Path, ...]] = {}


def local_catalog(cfg: Config) -> Catalog:
    """What the parse cache knows of every digest we hold, new and changed files parsed.

    The shipped samples stand in only while the site has no digest of its own: once
    ``archive_dir`` holds one, they are neither read nor listed, and nothing made from
    them is published again."""
    folders, found = _folders(cfg)
    if found is None:
        found = catalog(cfg.cache_path, folders)
    _say_where(cfg, tuple(folders))
    return found


def _say_where(cfg: Config, folders: tuple[Path, ...]) -> None:
    if _READ.get(cfg.cache_path) == folders:
        return
    _READ[cfg.cache_path] = folders
    samples = ""
    if reads_samples(cfg) and cfg.source_path in folders:
        samples = f" (the shipped samples stand in until {cfg.archive_path} holds a digest)"
    elif reads_samples(cfg):
        samples = f"; the shipped samples in {cfg.source_path} are left out from now on"
    where = " and ".join(str(folder) for folder in folders) or "no folder"
    log.info("reading digests from %s%s", where, samples)


def load_local_archive(cfg: Config) -> Archive:
    """Every digest we hold: the source folder (unless the source is a URL) and the
    stored archive, merged by date."""
    return local_catalog(cfg).load()


def _keep(cfg: Config, day: dt.date, url: str, data: bytes) -> IngestResult:
    """Parse a fetched body; store it in the archive, or keep it aside when unreadable."""
    why = ""
    try:
        digests, problems = parse_bytes(data, url)
    except DigestError as exc:
        why = str(exc)
    else:
        if not any(d.date == day and d.papers for d in digests):
            found = ", ".join(sorted({str(d.date) for d in digests})) or "none"
            why = f"{url}: no paper for {day} in the body (days found: {found})"
    if why:
        folder = rejected_path(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{day.isoformat()}-{hashlib.sha256(data).hexdigest()[:12]}"
        path = folder / f"{stem}.md"
        write_file(path, data, mode=PRIVATE_FILE, if_changed=True)
        error = f"{url}\n{why}\n".encode()
        write_file(folder / f"{stem}.error.txt", error, mode=PRIVATE_FILE, if_changed=True)
        log.error("digest for %s rejected: %s (kept in %s)", day, why, path)
        return IngestResult(day, "rejected", f"{why} (kept in {path})", path)
    for problem in problems:
        log.warning("digest for %s: %s", day, problem)
    folder = cfg.archive_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{day.isoformat()}.md"
    # The archive is private, like everything but the public folder.
    write_file(path, data, mode=PRIVATE_FILE, if_changed=True)
    papers = sum(len(d.papers) for d in digests if d.date == day)
    log.info("digest for %s stored in %s (%s)", day, path, count(papers, "paper"))
    found = f"{count(papers, 'paper')}, {count(len(problems), 'problem')}"
    return IngestResult(day, "stored", f"{url}: {found}", path)


async def fetch_digest(
    cfg: Config,
    day: dt.date,
    *,
    options: FetchOptions = FetchOptions(),
    stop: asyncio.Event | None = None,
) -> IngestResult:
    """Fetch ``day``'s digest from the URL source and store it (see the module docstring)."""
    import httpx  # only a URL source fetches: a start need not import it

    from newsletter.http import ApiError, Missing, request
    from newsletter.pacing import never

    url = digest_url(cfg.source, day)
    headers = {"User-Agent": f"newsletter (+{cfg.site_url})"}
    client = httpx.AsyncClient(timeout=options.timeouts(), headers=headers, follow_redirects=True)
    async with client:
        try:
            data = await request(
                client,
                "GET",
                url,
                what=url,
                policy=options,
                stopping=stop.is_set if stop is not None else never,
                want="bytes",
                missing=(404, 410),
            )
        except Missing as exc:
            return IngestResult(day, "missing", f"{url}: not published yet ({exc.status})")
        except ApiError as exc:
            log.warning("digest for %s unavailable: %s", day, exc)
            return IngestResult(day, "unavailable", str(exc))
    return await asyncio.to_thread(_keep, cfg, day, url, data)


async def ingest_day(
    cfg: Config,
    day: dt.date,
    *,
    options: FetchOptions = FetchOptions(),
    stop: asyncio.Event | None = None,
) -> tuple[IngestResult, Catalog]:
    """Make sure ``day``'s digest is in the archive: already there, or fetched from a URL
    source. Returns what happened and the archive as it now stands (from the parse cache:
    only new or changed files are parsed)."""
    held = await asyncio.to_thread(local_catalog, cfg)
    papers = held.papers_on(day)
    if papers:
        return IngestResult(day, "present", f"{day}: {count(papers, 'paper')}"), held
    if not cfg.source_is_url:
        return IngestResult(day, "missing", f"no digest for {day} in {cfg.source_path}"), held
    result = await fetch_digest(cfg, day, options=options, stop=stop)
    if result.outcome == "stored":
        held = await asyncio.to_thread(local_catalog, cfg)
    return result, held
