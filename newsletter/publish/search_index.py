"""The site's search index: static JSON files in ``public/search/`` that the search page
reads with no server behind it, built with the site and only where the archive changed.

- ``search/days/DATE.json``: the day's papers (id, title, authors, votes, summary as
  plain text), what results show and their snippets come from. Rewritten when the day's
  digests change.
- ``search/YEAR/``: one segment per year, its terms spread over ``SHARDS`` files by a
  hash of the term (``N.json``: term -> postings) and ``docs.json`` (its days with their
  number of papers, each paper's votes, and ``same``: [doc, earlier doc] for a paper
  listed again on a later day of the year, so a count of results counts it once). A
  segment is made again from its days' files when one of them changed; a day added after
  the segment's last (the daily job's case) is appended to it instead, reading the new
  day's file and the year's shards, and nothing else is touched.
- ``search/index.json``: the segments, each with its paper count and a version that
  changes with its content (the client asks for ``?v=``, so a cache never mixes two).

A query reads ``index.json``, each segment's ``docs.json``, the one shard per segment
that holds each of its terms, and the day files of the results it shows: a small part of
a ten-year archive. Postings are doc numbers within the segment, delta-encoded, each
times two plus one when the term is in the heading (title, authors, id).
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from newsletter.archive.cache import Catalog
from newsletter.files import PUBLIC_FILE, public_folder, write_file
from newsletter.models import Archive, Digest
from newsletter.publish import inline
from newsletter.publish.manifest import Manifest, _hash
from newsletter.publish.public_files import write_if_changed
from newsletter.publish.search_text import Entry, shard_of, terms

log = logging.getLogger(__name__)

__all__ = ["FOLDER", "INDEX_NAME", "SHARDS", "entries_of", "read_day", "refresh_index"]

FOLDER = "search"
INDEX_NAME = f"{FOLDER}/index.json"
SHARDS = 256
# Changes whenever what the files hold, or how terms are made, changes.
REVISION = "search-2"
# Days parsed at once while writing day files: bounds memory on a first build.
_BATCH = 60


def entries_of(digests: Iterable[Digest]) -> list[Entry]:
    """The papers of one day's digests, each once, in the order the digests give them."""
    seen: set[str] = set()
    entries = []
    for digest in digests:
        for paper in digest.papers:
            if paper.arxiv_id in seen:
                continue
            seen.add(paper.arxiv_id)
            summary = " ".join(inline.to_text(section.text) for section in paper.sections)
            entries.append(
                Entry(
                    digest.date.isoformat(),
                    paper.arxiv_id,
                    inline.to_text(paper.title),
                    ", ".join(paper.authors),
                    paper.votes or 0,
                    summary,
                )
            )
    return entries


def _day_name(day: str) -> str:
    return f"{FOLDER}/days/{day}.json"


def _dump_shard(shard: dict[str, list[int]]) -> bytes:
    """A shard as :func:`_dump` makes it, several times faster: its terms hold only
    lowercase Latin letters, digits, dots and Hangul syllables (search_text's words), which
    neither escapes, and its postings are small integers."""
    return orjson.dumps(shard)


def _dump(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _write(public: Path, name: str, body: object) -> None:
    path = public / name
    public_folder(path.parent)
    write_if_changed(path, _dump(body))


def read_day(public: Path, day: str) -> list[Entry]:
    """The entries of a day file (empty when it is missing or damaged: the segment is
    then made without that day, and the day file rewritten at the next build)."""
    try:
        rows = json.loads((public / _day_name(day)).read_bytes())
        return [Entry.from_json(day, row) for row in rows]
    except (OSError, ValueError, TypeError):
        log.warning("search: %s is missing or damaged", public / _day_name(day))
        return []


def _by_day(archive: Archive) -> dict[dt.date, list[Digest]]:
    found: dict[dt.date, list[Digest]] = {}
    for digest in archive.digests:
        found.setdefault(digest.date, []).append(digest)
    return found


def _batches(items: list[dt.date], size: int) -> Iterator[list[dt.date]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _write_days(
    catalog: Catalog, manifest: Manifest, days: list[dt.date], stopped: Callable[[], bool]
) -> set[dt.date] | None:
    """Write the stale day files; those days (None when stopped)."""
    stale = []
    for day in days:
        inputs = _hash(REVISION, catalog.fingerprint([day]))
        if not manifest.current(_day_name(day.isoformat()), inputs):
            stale.append((day, inputs))
    inputs_of = dict(stale)
    for batch in _batches([day for day, _ in stale], _BATCH):
        if stopped():
            return None
        by_day = _by_day(catalog.load(batch))
        for day in batch:
            name = _day_name(day.isoformat())
            _write(manifest.public, name, [e.to_json() for e in entries_of(by_day.get(day, []))])
            manifest.record(name, inputs_of[day])
    return {day for day, _ in stale}


def _segment(public: Path, year: int, days: list[dt.date]) -> int:
    """Make the year's shards and ``docs.json`` from its day files; its paper count."""
    postings: dict[str, list[int]] = {}
    last: dict[str, int] = {}
    counts: list[list[object]] = []
    votes: list[int] = []
    first: dict[str, int] = {}
    same: list[list[int]] = []
    doc = 0
    for day in days:
        entries = read_day(public, day.isoformat())
        counts.append([day.isoformat(), len(entries)])
        for entry in entries:
            earlier = first.setdefault(entry.arxiv_id, doc)
            if earlier != doc:
                same.append([doc, earlier])
            heading = terms(entry.heading())
            for term in heading | terms(entry.summary):
                gap = doc - last.get(term, 0)
                last[term] = doc
                postings.setdefault(term, []).append(gap * 2 + (term in heading))
            votes.append(entry.votes)
            doc += 1
    shards: list[dict[str, list[int]]] = [{} for _ in range(SHARDS)]
    for term in sorted(postings):
        shards[shard_of(term, SHARDS)][term] = postings[term]
    _write_segment(public, year, shards, range(SHARDS))
    _write(public, f"{FOLDER}/{year}/docs.json", {"days": counts, "votes": votes, "same": same})
    return doc


def _write_segment(
    public: Path,
    year: int,
    shards: list[dict[str, list[int]]],
    touched: Iterable[int],
    *,
    grown: bool = False,
) -> None:
    """Write the ``touched`` shards that hold terms, and remove the year's other files.
    ``grown``: each touched shard gained postings, so its file differs and is not read
    back to compare."""
    folder = f"{FOLDER}/{year}"
    for number in touched:
        if not shards[number]:
            continue
        if grown:
            data = _dump_shard(shards[number])
            write_file(public / folder / f"{number}.json", data, mode=PUBLIC_FILE)
        else:
            write_if_changed(public / folder / f"{number}.json", _dump_shard(shards[number]))
    written = {f"{number}.json" for number, shard in enumerate(shards) if shard}
    for name in os.listdir(public / folder):
        # Hidden names are files being written (newsletter.files), maybe by another
        # process building the same site: `newsletter feed` beside a starting service.
        if name not in written and name != "docs.json" and not name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                (public / folder / name).unlink()


class _Unlike(Exception):
    """A segment's files are not as written: it is made whole instead of extended."""


def _appended(
    catalog: Catalog,
    manifest: Manifest,
    docs: dict[str, Any] | None,
    in_year: list[dt.date],
    changed: set[dt.date],
) -> list[dt.date] | None:
    """The days of ``in_year`` after those the segment ``docs`` was made from, when it was
    made from just the days before them as they still are; None when it must be made whole."""
    try:
        made = [str(row[0]) for row in docs["days"]]  # type: ignore[index]
    except (TypeError, KeyError, IndexError):
        return None
    kept = in_year[: len(made)]
    if not 0 < len(made) < len(in_year) or [d.isoformat() for d in kept] != made:
        return None
    if any(day in changed for day in kept):
        return None
    inputs = _hash(REVISION, str(SHARDS), catalog.fingerprint(kept))
    if not manifest.current(f"{FOLDER}/{in_year[0].year}/docs.json", inputs):
        return None
    return in_year[len(made) :]


def _extend(
    public: Path, year: int, docs: dict[str, Any] | None, added: list[dt.date]
) -> int | None:
    """Append the papers of ``added`` (days after the segment's last) to the year's segment,
    byte for byte as :func:`_segment` would make it whole; its paper count, or None when
    its files are not as written."""
    try:
        return _append(public, year, docs, added)
    except (_Unlike, OSError, ValueError, TypeError, KeyError, IndexError):
        log.info("search: the segment of %d is not as written; making it whole", year)
        return None


def _append(public: Path, year: int, docs: Any, added: list[dt.date]) -> int:
    folder = public / FOLDER / str(year)
    shards: list[dict[str, list[int]]] = []
    for number in range(SHARDS):
        # A year's terms fill every shard but in its first days: a missing one is damage.
        # orjson: a year's shards are megabytes of JSON, read on every daily job.
        shard = orjson.loads((folder / f"{number}.json").read_bytes())
        if not isinstance(shard, dict):
            raise _Unlike
        shards.append(shard)
    counts, votes, same = list(docs["days"]), list(docs["votes"]), list(docs["same"])
    old = _Earlier(public, [(str(day), int(n)) for day, n in counts], shards)
    if old.limit != len(votes):
        raise _Unlike
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    touched: set[int] = set()
    doc = len(votes)
    for day in added:
        entries = read_day(public, day.isoformat())
        counts.append([day.isoformat(), len(entries)])
        for entry in entries:
            if entry.arxiv_id not in first:
                found = old.find(entry.arxiv_id)
                first[entry.arxiv_id] = doc if found is None else found
            if first[entry.arxiv_id] != doc:
                same.append([doc, first[entry.arxiv_id]])
            heading = terms(entry.heading())
            for term in heading | terms(entry.summary):
                number = shard_of(term, SHARDS)
                postings = shards[number].setdefault(term, [])
                before = last.get(term)
                if before is None:
                    before = _last_doc(postings)
                postings.append((doc - before) * 2 + (term in heading))
                last[term] = doc
                touched.add(number)
            votes.append(entry.votes)
            doc += 1
    for number in touched:
        shards[number] = dict(sorted(shards[number].items()))
    _write_segment(public, year, shards, sorted(touched), grown=True)
    _write(public, f"{FOLDER}/{year}/docs.json", {"days": counts, "votes": votes, "same": same})
    return doc


def _last_doc(postings: list[int]) -> int:
    """The doc number of a term's last posting (0 when none: a first gap counts from 0)."""
    # Each posting is gap * 2 + flag: the gaps' sum without a Python loop.
    return (sum(postings) - sum(map((1).__and__, postings))) // 2


class _Earlier:
    """The first paper of a segment's days with a given id: the docs whose heading holds
    the id's terms, checked against their day files."""

    def __init__(
        self, public: Path, counts: list[tuple[str, int]], shards: list[dict[str, list[int]]]
    ) -> None:
        self.public = public
        self.days = [day for day, _ in counts]
        self.starts: list[int] = []
        self.limit = 0
        for _, n in counts:
            self.starts.append(self.limit)
            self.limit += n
        self.shards = shards
        self.read: dict[int, list[Entry]] = {}

    def find(self, arxiv_id: str) -> int | None:
        found: set[int] | None = None
        for term in terms(arxiv_id):
            docs = self._heading_docs(self.shards[shard_of(term, SHARDS)].get(term, []))
            found = docs if found is None else found & docs
        for doc in range(self.limit) if found is None else sorted(found):
            index = bisect.bisect_right(self.starts, doc) - 1
            if index not in self.read:
                self.read[index] = read_day(self.public, self.days[index])
                if len(self.read[index]) != self.starts_count(index):
                    raise _Unlike
            if self.read[index][doc - self.starts[index]].arxiv_id == arxiv_id:
                return doc
        return None

    def starts_count(self, index: int) -> int:
        end = self.starts[index + 1] if index + 1 < len(self.starts) else self.limit
        return end - self.starts[index]

    def _heading_docs(self, postings: list[int]) -> set[int]:
        found, doc = set(), 0
        for posting in postings:
            doc += posting >> 1
            if doc >= self.limit:
                break
            if posting & 1:
                found.add(doc)
        return found


def refresh_index(
    catalog: Catalog, manifest: Manifest, days: list[dt.date], stopped: Callable[[], bool]
) -> bool:
    """Bring ``public/search/`` up to date with ``days`` (every day with papers, oldest
    first); False when stopped (what is done stays recorded)."""
    public = manifest.public
    changed = _write_days(catalog, manifest, days, stopped)
    if changed is None:
        return False
    years: dict[int, list[dt.date]] = {}
    for day in days:
        years.setdefault(day.year, []).append(day)
    segments = []
    for year, in_year in sorted(years.items()):
        name = f"{FOLDER}/{year}/docs.json"
        inputs = _hash(REVISION, str(SHARDS), catalog.fingerprint(in_year))
        docs = _recorded(public, name)
        count = _count(docs)
        if (
            count is None
            or any(d.year == year for d in changed)
            or not manifest.current(name, inputs)
        ):
            if stopped():
                return False
            count = _remake(catalog, manifest, docs, in_year, changed)
            manifest.record(name, inputs)
        segments.append([str(year), count, inputs[:12]])
    _write(public, INDEX_NAME, {"v": REVISION, "shards": SHARDS, "segments": segments})
    if not any(entry.sha256.startswith("!") for entry in catalog.entries):
        _remove_gone(manifest, {d.isoformat() for d in days}, {str(y) for y in years})
    return True


def _remake(
    catalog: Catalog,
    manifest: Manifest,
    docs: dict[str, Any] | None,
    in_year: list[dt.date],
    changed: set[dt.date],
) -> int:
    """Bring a year's segment up to date, by appending the days added after it when it can;
    its paper count."""
    public, year = manifest.public, in_year[0].year
    added = _appended(catalog, manifest, docs, in_year, changed)
    if added is not None:
        count = _extend(public, year, docs, added)
        if count is not None:
            log.info("search: added %d days to %d (%d papers)", len(added), year, count)
            return count
    count = _segment(public, year, in_year)
    log.info("search: indexed %d papers of %d", count, year)
    return count


def _recorded(public: Path, name: str) -> dict[str, Any] | None:
    """A segment's ``docs.json`` as written (None when missing or damaged)."""
    try:
        body = json.loads((public / name).read_bytes())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _count(docs: dict[str, Any] | None) -> int | None:
    try:
        return len(docs["votes"]) if docs is not None else None
    except (TypeError, KeyError):
        return None


def _remove_gone(manifest: Manifest, days: set[str], years: set[str]) -> None:
    """Remove the files of days and years the archive no longer holds."""
    root = manifest.public / FOLDER
    with contextlib.suppress(OSError):
        for name in os.listdir(root / "days"):
            if name.removesuffix(".json") not in days:
                (root / "days" / name).unlink()
                manifest.forget(f"{FOLDER}/days/{name}")
    with contextlib.suppress(OSError):
        for name in os.listdir(root):
            if name.isdigit() and name not in years:
                shutil.rmtree(root / name, ignore_errors=True)
                manifest.forget(f"{FOLDER}/{name}/docs.json")
