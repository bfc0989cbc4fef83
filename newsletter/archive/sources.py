"""Where digests come from: a folder, or a URL template fetched over HTTP.

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

from newsletter.archive.cache import Catalog, archive_folders, local_catalog
from newsletter.archive.digest import DigestError, parse_bytes
from newsletter.config import Config
from newsletter.files import PRIVATE_FILE, write_file
from newsletter.http import RetryPolicy
from newsletter.models import Archive
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
