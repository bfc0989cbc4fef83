"""``newsletter write``: the day's digest, written by this project when no one else does.

The Hugging Face Daily Papers list of the day, less the papers already summarized on an
earlier day, the most upvoted first (at most ``writer.max_papers``), each summarized in
Korean by an OpenAI-compatible model asked for a JSON object with the keys of
:data:`KEYS`, written to ``archive_dir/YYYY-MM-DD.md`` in the newest variant of the
format :mod:`newsletter.archive.digest` reads. The file is parsed back before it replaces the
old one, and must give the same papers, votes, authors, media and sections.

Cost and failure control:

- every summary is kept in the ``summaries`` table under the paper's arXiv id and the
  hash of the prompt (template, model, source of the text), as soon as it is paid for:
  a later run, a restart or a run cut short never buys it again;
- ``concurrency`` requests at once, ``requests_per_minute``, retries with backoff on
  429 (its ``Retry-After`` honoured), 5xx, timeouts and unusable answers;
- a paper whose summary still fails is written without one, and summarized on the next
  run; the day is never dropped for it;
- the file is written whole or not at all (temporary file, fsync, rename);
- usage (requests, tokens in and out, from the API's ``usage``) is added up per day in
  ``writer_days`` and shown by ``newsletter status``.

Votes move during the day: a later run of the same day writes the file again with the
new votes and any late papers, from the cache for the papers it already summarized.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from newsletter.archive.digest import DigestError, parse_text
from newsletter.archive.papers import DailyPaper, fetch_daily_papers
from newsletter.archive.summaries import (
    KEYS,
    SummaryRun,
    chat_client,
    parse_summary,
    summarize_all,
)
from newsletter.config import WRITER_API_KEY_ENV, Config
from newsletter.errors import NewsletterError
from newsletter.files import PRIVATE_FILE, write_file
from newsletter.http import ApiError, RetryPolicy
from newsletter.models import Paper, Section
from newsletter.pacing import Steps, Stopping
from newsletter.store import Store, WriterDay
from newsletter.words import count

log = logging.getLogger(__name__)

__all__ = [
    "KEYS",
    "Prompt",
    "WriteResult",
    "WriterError",
    "load_prompt",
    "render_digest",
    "write_day",
]

_PART_RE = re.compile(r"^\[(system|user)\]\s*$", re.M)
# Seconds to wait for a connection to either API: a host that cannot be reached is said
# well before a person gives up on the command (the reply itself may take minutes).
CONNECT_TIMEOUT = 5.0


class WriterError(NewsletterError):
    """The day's digest cannot be written now (no key, the list unavailable, a bad
    prompt file); nothing was written."""


# --- the prompt -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """The prompt template's two parts; ``${title}``, ``${authors}``, ``${source_label}``
    and ``${content}`` are filled in per paper."""

    system: str
    user: str
    path: Path

    def fill(self, paper: DailyPaper, content: str, full_text: bool) -> tuple[str, str]:
        values = {
            "title": paper.title,
            "authors": ", ".join(paper.authors),
            "source_label": "Paper text" if full_text else "Abstract",
            "content": content,
            "arxiv_id": paper.arxiv_id,
        }
        return (
            string.Template(self.system).safe_substitute(values),
            string.Template(self.user).safe_substitute(values),
        )


def prompt_path(cfg: Config) -> Path:
    if cfg.writer.prompt_file:
        return cfg.resolve(Path(cfg.writer.prompt_file))
    from newsletter.shipped import shipped

    return shipped("templates") / "writer" / "prompt.txt"


def load_prompt(cfg: Config) -> Prompt:
    """Read and check the prompt template (``[system]`` then ``[user]``)."""
    path = prompt_path(cfg)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WriterError(f"writer.prompt_file: {path} not found") from None
    except OSError as exc:
        raise WriterError(f"writer.prompt_file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise WriterError(f"writer.prompt_file: {path} is not UTF-8") from None
    parts: dict[str, str] = {}
    found = list(_PART_RE.finditer(text))
    for index, match in enumerate(found):
        end = found[index + 1].start() if index + 1 < len(found) else len(text)
        parts[match.group(1)] = text[match.end() : end].strip()
    if not parts.get("user"):
        raise WriterError(
            f"writer.prompt_file: {path} needs a [user] part (and may start with a [system] part)"
        )
    if "${content}" not in parts["user"] and "$content" not in parts["user"]:
        raise WriterError(f"writer.prompt_file: {path}: the [user] part never uses ${{content}}")
    return Prompt(parts.get("system", ""), parts["user"], path)


def prompt_hash(cfg: Config, prompt: Prompt) -> str:
    """What a cached summary answered: the template, the model, and the text it was given."""
    writer = cfg.writer
    source = f"full_text:{writer.full_text_budget}" if writer.full_text else "abstract"
    key = json.dumps([prompt.system, prompt.user, writer.model, source], ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()


# --- the digest file --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    paper: DailyPaper
    summary: dict[str, str] | None


def _paper_model(entry: Entry) -> Paper:
    """What the parser must read back for ``entry``."""
    paper = entry.paper
    sections = tuple(Section(key, entry.summary[key]) for key in KEYS) if entry.summary else ()
    return Paper(
        arxiv_id=paper.arxiv_id,
        title=paper.title,
        media=paper.media,
        votes=paper.votes,
        authors=paper.authors,
        sections=sections,
    )


def render_digest(day: dt.date, entries: list[Entry]) -> str:
    """The day's digest in the newest format (see the seeds and README's digest format)."""
    lines = [f"## Daily Papers ({day.isoformat()})", ""]
    for entry in entries:
        paper = entry.paper
        lines += [f"### [{paper.title}](https://arxiv.org/abs/{paper.arxiv_id})", ""]
        if paper.media is not None:
            if paper.media.kind == "video":
                lines += [f"[Watch Video]({paper.media.url})", ""]
            else:
                lines += [f"![]({paper.media.url})", ""]
        if paper.votes is not None:
            lines += [f"Vote: {paper.votes}", ""]
        if paper.authors:
            lines += [f"Authors: {', '.join(paper.authors)}", ""]
        if entry.summary:
            lines += [f"- **{key}**: {entry.summary[key]}" for key in KEYS]
            lines.append("")
    return "\n".join(lines)


def check_round_trip(text: str, day: dt.date, entries: list[Entry], file: str) -> None:
    """The parser reads ``text`` back as exactly ``entries``, or :class:`WriterError`."""
    try:
        digests, _ = parse_text(text, file)
    except DigestError as exc:
        raise WriterError(f"the written digest does not parse: {exc}") from None
    got = [
        Paper(p.arxiv_id, p.title, p.media, p.votes, p.authors, p.sections)
        for d in digests
        if d.date == day
        for p in d.papers
    ]
    want = [_paper_model(e) for e in entries]
    if [d.date for d in digests] != [day] or got != want:
        for mine, theirs in zip(want, got, strict=False):
            if mine != theirs:
                raise WriterError(
                    f"the written digest reads back differently for {mine.arxiv_id}: "
                    f"{theirs!r} instead of {mine!r}"
                )
        raise WriterError(f"the written digest reads back {len(got)} papers, not {len(want)}")


# --- a day's run ------------------------------------------------------------------------------


@dataclass
class WriteResult:
    """What one run did for ``day``. ``status``: written, unchanged, dry-run, empty (no
    paper listed yet), present (another source has the day), stopped."""

    day: dt.date
    status: str
    path: Path | None = None
    papers: int = 0
    summarized: int = 0
    cached: int = 0
    pending: int = 0
    earlier: int = 0
    over_limit: int = 0
    requests: int = 0
    failures: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    plan: list[str] = field(default_factory=list)
    detail: str = ""
    # A refusal that every request would get (a bad key, an unknown model).
    refused: str = ""

    def summary(self) -> str:
        if self.status in ("empty", "present", "stopped"):
            return f"{self.day}: {self.detail}"
        where = f" to {self.path}" if self.path and self.status != "dry-run" else ""
        verb = {"written": "written", "unchanged": "unchanged", "dry-run": "would write"}[
            self.status
        ]
        text = (
            f"{self.day}: {verb}{where}: {count(self.papers, 'paper')} "
            f"({self.summarized} {'to summarize' if self.status == 'dry-run' else 'summarized'}, "
            f"{self.cached} from the cache, {self.pending} without a summary; "
            f"{self.earlier} already on an earlier day, {self.over_limit} over max_papers)"
        )
        if self.status != "dry-run":
            text += f"; tokens in {self.tokens_in}, out {self.tokens_out}"
        return text


def digest_path(cfg: Config, day: dt.date) -> Path:
    return cfg.archive_path / f"{day.isoformat()}.md"


def _plan(
    listed: list[DailyPaper], earlier: set[str], max_papers: int
) -> tuple[list[DailyPaper], int, int]:
    """The day's papers to write, most upvoted first; how many were on an earlier day and
    how many fell over ``max_papers``."""
    fresh = [p for p in listed if p.arxiv_id not in earlier]
    # sorted() is stable: equal votes keep the list's order; unknown votes go last.
    fresh.sort(key=lambda p: -1 if p.votes is None else p.votes, reverse=True)
    return fresh[:max_papers], len(listed) - len(fresh), max(len(fresh) - max_papers, 0)


def _held(cfg: Config, day: dt.date) -> tuple[set[str], list[str], dict[str, dict[str, str]]]:
    """From the archive: the papers of earlier days, the files other than ours holding
    ``day``, and the sections our own file already has for each paper."""
    from newsletter.archive.sources import local_catalog, reads_samples

    catalog = local_catalog(cfg)
    # The shipped samples stand in for a site's own digests and give way to the first one:
    # a sample day is no other source's, and a sample paper was never sent.
    samples = cfg.source_path.resolve() if reads_samples(cfg) else None
    entries = [e for e in catalog.entries if Path(e.path).resolve().parent != samples]
    earlier = {
        arxiv_id
        for entry in entries
        for date, papers in entry.days
        if date < day
        for arxiv_id, _ in papers
    }
    ours = digest_path(cfg, day)
    others: list[str] = []
    kept: dict[str, dict[str, str]] = {}
    for entry in catalog.files_for([day]):
        if Path(entry.path).resolve().parent == samples:
            continue
        if Path(entry.path).resolve() != ours.resolve():
            others.append(entry.path)
            continue
        for digest in catalog.parsed(entry):
            for paper in digest.papers:
                labelled = {s.label: s.text for s in paper.sections if s.label in KEYS}
                if digest.date == day and len(labelled) == len(KEYS) and all(labelled.values()):
                    kept[paper.arxiv_id] = labelled
    return earlier, others, kept


def missing_key(cfg: Config) -> str:
    """Why the model cannot be asked (no key), or nothing; a dry run says it too."""
    if cfg.writer.api_key:
        return ""
    return (
        f"no API key for the model: set {WRITER_API_KEY_ENV} (it is never read from the "
        "settings file)"
    )


def writer_policy(cfg: Config, policy: RetryPolicy | None = None) -> RetryPolicy:
    """The run's retries: ``writer.max_attempts`` tries; an address that cannot be
    connected to is said at once (see :data:`CONNECT_TIMEOUT`), not after every backoff."""
    writer = cfg.writer
    policy = policy or RetryPolicy(
        attempts=writer.max_attempts,
        timeout=writer.timeout_seconds,
        connect_timeout=min(CONNECT_TIMEOUT, writer.timeout_seconds),
    )
    return dataclasses.replace(policy, retry_unreachable=False)


async def write_day(
    cfg: Config,
    store: Store | None,
    day: dt.date,
    *,
    dry_run: bool = False,
    policy: RetryPolicy | None = None,
    stopping: Stopping | None = None,
    progress: Steps | None = None,
) -> WriteResult:
    """Write ``day``'s digest (see the module docstring). ``store`` may be None only for a
    dry run (every summary then counts as not cached). ``progress`` is told the papers
    summarized (or given up on) and the papers to summarize."""
    no_key = missing_key(cfg)
    if no_key and not dry_run:
        raise WriterError(no_key)
    return await _write_day(
        cfg, store, day, dry_run, writer_policy(cfg, policy), stopping or (lambda: False), progress
    )


async def _write_day(
    cfg: Config,
    store: Store | None,
    day: dt.date,
    dry_run: bool,
    policy: RetryPolicy,
    stopping: Stopping,
    progress: Steps | None,
) -> WriteResult:
    writer = cfg.writer
    prompt = load_prompt(cfg)
    key = prompt_hash(cfg, prompt)
    earlier, others, kept = await asyncio.to_thread(_held, cfg, day)
    path = digest_path(cfg, day)
    present = await _present(store, day, path, others)
    if present is not None:
        return present
    headers = {"User-Agent": f"newsletter (+{cfg.site_url})"}
    async with httpx.AsyncClient(
        timeout=policy.timeouts(), headers=headers, follow_redirects=True
    ) as client:
        listed = await _listed(cfg, client, day, policy, stopping)
        if not listed:
            return WriteResult(day, "empty", detail=f"no paper listed for {day} yet")
        chosen, on_earlier, over = _plan(listed, earlier, writer.max_papers)
        result = WriteResult(
            day, "dry-run" if dry_run else "written", path, earlier=on_earlier, over_limit=over
        )
        if not chosen:
            result.status = "empty"
            result.detail = f"every paper listed for {day} was already on an earlier day"
            return result
        cached = await _cached(store, chosen, key, kept)
        missing = [p for p in chosen if p.arxiv_id not in cached]
        result.cached = len(chosen) - len(missing)
        if dry_run:
            return _dry_run(result, chosen, cached)
        assert store is not None
        chat = chat_client(cfg, client, policy, stopping)
        run = SummaryRun(cfg, store, client, chat, prompt, key, day, policy, stopping, result)
        await summarize_all(run, missing, cached, progress)
    if result.refused and not result.summarized:
        # Not a day of papers without summaries: nothing is written until the API accepts.
        raise WriterError(result.refused)
    if result.refused:
        log.error(
            "writer: %s; the papers not summarized yet are tried on the next run", result.refused
        )
    if stopping():
        return _stopped(result)
    entries = [Entry(p, cached.get(p.arxiv_id)) for p in chosen]
    await _write_digest(store, path, day, entries, result)
    return result


async def _present(
    store: Store | None, day: dt.date, path: Path, others: list[str]
) -> WriteResult | None:
    """Why ``day`` is not ours to write, if it is not: another file holds it, or our file
    is there but was not written by us."""
    if others:
        detail = f"already in the archive from {', '.join(others)}: nothing written"
        return WriteResult(day, "present", detail=detail)
    if path.exists() and store is not None:
        row = await asyncio.to_thread(store.writer_day, day)
        if row is None or row.written_at is None:
            detail = f"{path} was not written by `newsletter write` (fetched?): left as it is"
            return WriteResult(day, "present", detail=detail)
    return None


async def _listed(
    cfg: Config,
    client: httpx.AsyncClient,
    day: dt.date,
    policy: RetryPolicy,
    stopping: Stopping,
) -> list[DailyPaper]:
    url = cfg.writer.papers_url
    try:
        return await fetch_daily_papers(client, url, day, policy=policy, stopping=stopping)
    except ApiError as exc:
        if exc.unreachable:
            raise WriterError(
                f"cannot connect to writer.papers_url ({url}): {exc.reason}"
            ) from None
        raise WriterError(f"writer.papers_url ({url}): {exc}") from None


async def _cached(
    store: Store | None, chosen: list[DailyPaper], key: str, kept: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """The summaries of ``chosen`` already paid for (under ``key``) or in our file, by
    arXiv id."""
    cached: dict[str, dict[str, str]] = {}
    if store is not None:
        bodies = await asyncio.to_thread(store.get_summaries, [p.arxiv_id for p in chosen], key)
        for arxiv_id, body in bodies.items():
            parsed = parse_summary(body)
            if isinstance(parsed, dict):
                cached[arxiv_id] = parsed
    for arxiv_id, sections in kept.items():
        cached.setdefault(arxiv_id, sections)
    return cached


def _dry_run(
    result: WriteResult, chosen: list[DailyPaper], cached: dict[str, dict[str, str]]
) -> WriteResult:
    """``result`` as a dry run reports it: which papers it would summarize."""
    result.papers = len(chosen)
    result.summarized = len(chosen) - result.cached
    result.plan = [
        f"{p.arxiv_id}  {'-' if p.votes is None else p.votes:>4}  "
        f"{'cached   ' if p.arxiv_id in cached else 'summarize'}  {p.title}"
        for p in chosen
    ]
    return result


def _stopped(result: WriteResult) -> WriteResult:
    result.status = "stopped"
    result.detail = (
        f"stopped before writing; {count(result.summarized, 'summary', 'summaries')} kept "
        "in the cache for the next run"
    )
    return result


async def _write_digest(
    store: Store, path: Path, day: dt.date, entries: list[Entry], result: WriteResult
) -> None:
    """Write ``entries`` as ``day``'s file, unless it holds them already, and record the
    day as written."""
    result.papers = len(entries)
    result.pending = sum(1 for e in entries if e.summary is None)
    text = render_digest(day, entries)
    check_round_trip(text, day, entries, str(path))
    data = text.encode("utf-8")
    try:
        unchanged = path.read_bytes() == data
    except OSError:
        unchanged = False
    if unchanged:
        result.status = "unchanged"
    else:
        # The archive is private; the rename is made durable before the day counts as written.
        await asyncio.to_thread(write_file, path, data, mode=PRIVATE_FILE, sync_folder=True)
    await asyncio.to_thread(store.finish_writer_day, day, result.papers, result.pending)
    log.info("writer: %s", result.summary())
    if result.pending:
        log.warning(
            "writer: %s: %s written without a summary; the next run tries again",
            day,
            count(result.pending, "paper"),
        )


def usage_lines(rows: list[WriterDay]) -> list[str]:
    """``newsletter status``: the writer's latest days, one line each."""
    lines = []
    for row in rows:
        line = (
            f"  {row.day}: {count(row.requests, 'request')} ({row.failures} failed), "
            f"tokens in {row.tokens_in}, out {row.tokens_out}"
        )
        if row.written_at is not None:
            line += f"; {count(row.papers, 'paper')} written, {row.pending} without a summary"
        lines.append(line)
    return lines
