"""The parse cache: a digest file is parsed once, until it changes.

Each folder of digests has an index file in ``cache_dir`` (``index-<hash of the folder>.json``)
recording, per file, its size, mtime, ctime, inode and content hash (SHA-256), its problems,
and a summary of its days (each paper's arXiv id and votes). What the parser made of a file is
kept in ``cache_dir/parsed/<content hash>.json``, named by content so that a renamed file is
not parsed again. Both are JSON with a first line holding a format version and the SHA-256
of the rest: a file that fails the check (truncated, edited, written by another version) is
ignored and rebuilt, never trusted.

A file whose stat matches its entry is taken as unchanged without reading it, unless its
mtime falls within :data:`RACY_NS` of the scan that recorded it: a file rewritten in
the same timestamp tick as that scan could show the same stat with other content, so such
a file is hashed again (as git does with its index). Any other write changes the ctime,
which no program can set, so a file replaced with the same size and mtime is hashed again
too, and parsed again only when its hash moved. A file that read well before and now reads
like a cut-off copy of itself (another program rewriting it in place) keeps its last good
parse until it is whole (:mod:`newsletter.archive.settle`).

The summary lets the service work without holding the whole archive in memory: feeds and
the weekly pages' input hashes need only ids and votes, and only the days they show are
loaded in full (:meth:`Catalog.load`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newsletter.archive.cache_format import (
    FORMAT,
    digest_rows,
    digests_from_rows,
    read_checked,
    write_checked,
)
from newsletter.archive.digest import DigestError, merge_digests, parse_bytes
from newsletter.archive.settle import settle
from newsletter.models import Archive, Digest, Paper, Problem
from newsletter.pacing import usable_cores

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "Catalog",
    "FileEntry",
    "catalog",
    "read_checked",
    "scan_folder",
    "write_checked",
]

# Coarser than any filesystem timestamp we expect (FAT has 2 s; ext4 ticks with the kernel clock).
RACY_NS = 2_000_000_000

# [arxiv_id, votes] of each paper of a day, in file order (kept as the index decodes them:
# turning 60,000 pairs into tuples on every start would cost more than the rest of it).
DaySummary = tuple[dt.date, Sequence[Sequence[Any]]]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One digest file as last seen: its stat, its content hash, and what it holds."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    sha256: str
    problems: tuple[Problem, ...]
    days: tuple[DaySummary, ...]

    def stat_key(self) -> tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.ino)


# --- parsed digests, by content hash ---------------------------------------------------------


@dataclass
class _Store:
    """The cache folder: index files per digest folder, parsed files by content hash."""

    root: Path

    def index_path(self, folder: Path) -> Path:
        key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        return self.root / f"index-{key}.json"

    def parsed_path(self, sha256: str) -> Path:
        return self.root / "parsed" / f"{sha256}.json"

    def load_parsed(self, entry: FileEntry) -> list[Digest] | None:
        body = read_checked(self.parsed_path(entry.sha256))
        if not isinstance(body, list):
            return None
        try:
            return digests_from_rows(body, entry.path)
        except (TypeError, ValueError):
            log.warning("cache file %s does not hold digests: rebuilding it", entry.sha256)
            return None


# --- scanning --------------------------------------------------------------------------------


def _entry_from_json(path: str, row: Any) -> FileEntry:
    size, mtime_ns, ctime_ns, ino, sha, problems, days = row
    return FileEntry(
        path,
        size,
        mtime_ns,
        ctime_ns,
        ino,
        sha,
        tuple(Problem(path, line, message) for line, message in problems),
        tuple([(dt.date.fromisoformat(day), papers) for day, papers in days]),
    )


def _entry_json(entry: FileEntry) -> list[Any]:
    return [
        entry.size,
        entry.mtime_ns,
        entry.ctime_ns,
        entry.ino,
        entry.sha256,
        [[p.line, p.message] for p in entry.problems],
        [[day.isoformat(), [list(p) for p in papers]] for day, papers in entry.days],
    ]


def _summary(digests: Iterable[Digest]) -> tuple[DaySummary, ...]:
    return tuple((d.date, [[p.arxiv_id, p.votes] for p in d.papers]) for d in digests)


def _parse(store: _Store, path: Path, st: os.stat_result, data: bytes, sha: str) -> FileEntry:
    name = str(path)
    try:
        digests, problems = parse_bytes(data, name)
    except DigestError as exc:
        digests, problems = [], [exc.problem]
    else:
        write_checked(store.parsed_path(sha), digest_rows(digests))
    return _stat_entry(name, st, sha, tuple(problems), _summary(digests))


def _stat_entry(
    name: str,
    st: os.stat_result,
    sha: str,
    problems: tuple[Problem, ...],
    days: tuple[DaySummary, ...],
) -> FileEntry:
    return FileEntry(
        name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sha, problems, days
    )


def _parse_path(cache_dir: Path, name: str) -> FileEntry:
    """Stat, read, hash and parse one file, keeping what the parser made of it (the work
    of a cold scan's worker processes; the stat is taken before the read, so a file
    changed meanwhile shows another stat on the next scan)."""
    path = Path(name)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        return _unreadable(name, exc)
    return _parse(_Store(cache_dir), path, st, data, hashlib.sha256(data).hexdigest())


# Below this many files to parse, worker processes cost more to start than they save.
PARALLEL_MIN = 200


def _parse_all(cache_dir: Path, names: list[str]) -> list[FileEntry]:
    """:func:`_parse_path` of each of ``names``, in order: in worker processes when there
    are many (a first scan of years of digests), here otherwise."""
    workers = min(usable_cores(), 4)
    if len(names) < PARALLEL_MIN or workers < 2:
        return [_parse_path(cache_dir, name) for name in names]
    import multiprocessing

    # spawn, not fork: the caller may run threads (the service's event loop, a sender).
    with ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=gc.disable
    ) as pool:
        return list(
            pool.map(
                _parse_path,
                [cache_dir] * len(names),
                names,
                chunksize=max(1, min(64, len(names) // (workers * 8))),
            )
        )


def _walk(folder: Path) -> list[tuple[str, str]]:
    """(path relative to ``folder``, path) of each file of
    :func:`~newsletter.archive.digest.digest_files`, in its order, with no Path object per file."""
    if folder.is_file():
        return [(".", str(folder))]
    found: list[tuple[tuple[str, ...], str]] = []

    def visit(directory: str, parts: tuple[str, ...]) -> None:
        try:
            with os.scandir(directory) as it:
                children = list(it)
        except OSError:
            return
        for child in children:
            if child.name.startswith("."):
                continue
            # As Path.rglob: into real folders only, never through a link to one.
            if child.is_dir(follow_symlinks=False):
                visit(child.path, (*parts, child.name))
            elif child.is_file():
                found.append(((*parts, child.name), child.path))

    visit(str(folder), ())
    found.sort(key=lambda item: item[0])
    return [("/".join(parts), path) for parts, path in found]


@dataclass(frozen=True)
class ScanStats:
    files: int = 0
    hashed: int = 0
    parsed: int = 0
    removed: int = 0


@dataclass
class _Scan:
    """One scan of a folder: what its index knew, and what the walk has found so far."""

    store: _Store
    folder: Path
    index_path: Path
    # Path relative to the folder -> its row in the index, as decoded; emptied at the first
    # row that does not match this version, as the rest of that index cannot be trusted.
    rows: dict[str, Any]
    scanned_ns: int
    seen: set[str] = field(default_factory=set)
    # Entries decoded from ``rows``, by path: their rows can be written back as they are.
    known: dict[str, FileEntry] = field(default_factory=dict)
    by_sha: dict[str, FileEntry] | None = None
    entries: list[FileEntry] = field(default_factory=list)
    # Index of an entry in ``entries`` -> its file, to parse once the walk is done; and the
    # entry it had when it read well before (see newsletter.archive.settle).
    pending: dict[int, str] = field(default_factory=dict)
    before: dict[int, FileEntry] = field(default_factory=dict)
    hashed: int = 0
    outright: int = 0
    changed: bool = False

    @classmethod
    def start(cls, store: _Store, folder: Path) -> _Scan:
        index_path = store.index_path(folder)
        body = read_checked(index_path)
        rows: dict[str, Any] = {}
        scanned_ns = 0
        if isinstance(body, dict) and body.get("folder") == str(folder.resolve()):
            scanned_ns = int(body.get("scanned_ns", 0))
            files = body.get("files")
            rows = files if isinstance(files, dict) else {}
        return cls(store, folder, index_path, rows, scanned_ns)

    def visit_all(self, walked: list[tuple[str, str]]) -> None:
        self.seen = {rel for rel, _ in walked}
        for rel, name in walked:
            self.visit(rel, name)
        if self.pending:
            parsed = _parse_all(self.store.root, list(self.pending.values()))
            parsed = settle(
                list(zip(parsed, map(self.before.get, self.pending), strict=True)),
                lambda name: _parse_path(self.store.root, name),
                lambda old: self.store.parsed_path(old.sha256).exists(),
            )
            for index, entry in zip(self.pending, parsed, strict=True):
                self.entries[index] = entry
            self.hashed += self.outright

    def visit(self, rel: str, name: str) -> None:
        """Add the entry of the file ``name`` (``rel`` in the folder): the known one while
        its stat holds, else one from its content."""
        try:
            st = os.stat(name)
        except OSError as exc:
            self.entries.append(_unreadable(name, exc))
            self.changed = True
            return
        old = self.known_entry(rel, name)
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        racy = old is not None and old.mtime_ns >= self.scanned_ns - RACY_NS
        if old is not None and old.stat_key() == key and not racy:
            self.entries.append(old)
            return
        self.changed = True
        if not self.rows:
            # Nothing known here (a first scan): no content to reuse, parse outright.
            self.defer(name)
            self.outright += 1
            return
        self.rehash(name, st, old)

    def known_entry(self, rel: str, name: str) -> FileEntry | None:
        row = self.rows.get(rel)
        if row is None:
            return None
        try:
            old = self.known[name] = _entry_from_json(name, row)
        except (TypeError, ValueError):
            log.warning(
                "cache index %s does not match this version: rebuilding it", self.index_path
            )
            self.rows, self.known = {}, {}
            return None
        return old

    def rehash(self, name: str, st: os.stat_result, old: FileEntry | None) -> None:
        """Reuse what is known of the file's content, or put the file aside to parse."""
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            self.entries.append(_unreadable(name, exc))
            return
        self.hashed += 1
        sha = hashlib.sha256(data).hexdigest()
        same = old if old is not None and old.sha256 == sha else None
        if same is None:
            same = self.gone_by_sha().get(sha)
        if same is not None and self.store.parsed_path(sha).exists():
            # Same content: only the stat moved (a touch, a copy, a same-tick rewrite),
            # or the file was renamed.
            problems = tuple(Problem(name, p.line, p.message) for p in same.problems)
            self.entries.append(_stat_entry(name, st, sha, problems, same.days))
        else:
            self.defer(name, old)

    def defer(self, name: str, old: FileEntry | None = None) -> None:
        if old is not None and old.days:
            self.before[len(self.entries)] = old
        self.pending[len(self.entries)] = name
        self.entries.append(_unreadable(name, OSError("not parsed")))

    def gone_by_sha(self) -> dict[str, FileEntry]:
        """Every entry that is gone from its place, by content: where a renamed file's
        content was."""
        if self.by_sha is None:
            self.by_sha = {}
            for gone, row in self.rows.items():
                if gone not in self.seen:
                    with contextlib.suppress(TypeError, ValueError):
                        entry = _entry_from_json(_name(str(self.folder), gone), row)
                        self.by_sha[entry.sha256] = entry
        return self.by_sha

    def removed(self) -> list[FileEntry]:
        removed: list[FileEntry] = []
        for rel, row in self.rows.items():
            if rel not in self.seen:
                with contextlib.suppress(TypeError, ValueError):
                    removed.append(_entry_from_json(_name(str(self.folder), rel), row))
        return removed

    def save(self, walked: list[tuple[str, str]], started_ns: int) -> None:
        rels = {name: rel for rel, name in walked}
        rows, known = self.rows, self.known
        write_checked(
            self.index_path,
            {
                "folder": str(self.folder.resolve()),
                "scanned_ns": started_ns,
                "files": {
                    rels[e.path]: (
                        rows[rels[e.path]]
                        if e is known.get(e.path) and rels[e.path] in rows
                        else _entry_json(e)
                    )
                    for e in self.entries
                    if not e.sha256.startswith("!")
                },
            },
        )


def scan_folder(cache_dir: Path, folder: Path) -> tuple[list[FileEntry], ScanStats]:
    """Every digest file under ``folder``, parsing only the new and changed ones."""
    scan = _Scan.start(_Store(cache_dir), folder)
    started_ns = time.time_ns()
    # The parser allocates many small objects and frees them with each file; a collection
    # in the middle of a cold scan only walks them in vain.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        walked = _walk(folder)
        scan.visit_all(walked)
    finally:
        if was_enabled:
            gc.enable()
    removed = scan.removed()
    if scan.changed or removed or (not scan.rows and scan.entries):
        _forget(scan.store, removed, scan.entries)
        scan.save(walked, started_ns)
    stats = ScanStats(len(scan.entries), scan.hashed, len(scan.pending), len(removed))
    log.debug("scanned %s: %s", folder, stats)
    return scan.entries, stats


def _name(root: str, rel: str) -> str:
    return root if rel == "." else f"{root}/{rel}"


def _unreadable(name: str, exc: OSError) -> FileEntry:
    problem = Problem(name, 0, f"cannot read: {exc.strerror or exc}")
    # "!" marks an entry that is reported but never stored: the next scan tries again.
    return FileEntry(name, 0, 0, 0, 0, "!", (problem,), ())


def _forget(store: _Store, removed: list[FileEntry], kept: list[FileEntry]) -> None:
    """Drop the parsed copies of removed or changed files that nothing here still uses (a
    copy another folder uses is parsed again there, never read wrong)."""
    live = {e.sha256 for e in kept}
    for entry in removed:
        if entry.sha256 not in live:
            store.parsed_path(entry.sha256).unlink(missing_ok=True)


# --- the catalog ------------------------------------------------------------------------------


@dataclass
class Catalog:
    """Every digest file of the source folder and the archive, as the cache knows them."""

    cache_dir: Path
    entries: list[FileEntry]
    stats: ScanStats
    _by_date: dict[dt.date, list[int]] | None = field(default=None, repr=False)

    @property
    def problems(self) -> tuple[Problem, ...]:
        return tuple(p for e in self.entries for p in e.problems)

    def dates(self) -> list[dt.date]:
        """Every day with a digest, oldest first."""
        return sorted({day for e in self.entries for day, _ in e.days})

    def papers_on(self, day: dt.date) -> int:
        ids: set[str] = set()
        for entry in self.entries:
            for date, papers in entry.days:
                if date == day:
                    ids.update(a for a, _ in papers)
        return len(ids)

    def files_for(self, days: Iterable[dt.date]) -> list[FileEntry]:
        """The files holding any of ``days``, in scan order."""
        by_date = self._by_date
        if by_date is None:
            by_date = self._by_date = {}
            for index, entry in enumerate(self.entries):
                for day, _ in entry.days:
                    by_date.setdefault(day, []).append(index)
        found = sorted({i for day in set(days) for i in by_date.get(day, ())})
        return [self.entries[i] for i in found]

    def outline(self, days: Iterable[dt.date] | None = None) -> Archive:
        """The archive (or its ``days``) with each paper reduced to its id and votes:
        enough to rank and to tell days apart, not to render."""
        wanted = None if days is None else set(days)
        digests = [
            Digest(day, tuple([Paper(a, "", votes=v) for a, v in papers]), (e.path,))
            for e in self.entries
            for day, papers in e.days
            if wanted is None or day in wanted
        ]
        return Archive(tuple(merge_digests(digests)), self.problems)

    @property
    def store(self) -> _Store:
        return _Store(self.cache_dir)

    def parsed(self, entry: FileEntry) -> list[Digest]:
        """What the parser made of ``entry``'s file, from the cache (parsed again when the
        cached copy is gone or damaged)."""
        store = self.store
        digests = store.load_parsed(entry)
        if digests is None:
            # The parsed copy is gone or damaged: parse the file again (and keep it).
            path = Path(entry.path)
            data = path.read_bytes()
            try:
                found, _ = parse_bytes(data, entry.path)
            except DigestError:
                found = []
            sha = hashlib.sha256(data).hexdigest()
            write_checked(store.parsed_path(sha), digest_rows(found))
            digests = found
        return digests

    def iter_parsed(self, days: Iterable[dt.date] | None = None) -> Iterator[list[Digest]]:
        """The parsed digests of each file holding one of ``days`` (all files when None)."""
        entries = self.entries if days is None else self.files_for(days)
        for entry in entries:
            if entry.days:
                yield self.parsed(entry)

    def load(self, days: Iterable[dt.date] | None = None) -> Archive:
        """The full digests of ``days`` (every day when None), merged by date."""
        wanted = None if days is None else set(days)
        found: list[Digest] = []
        for digests in self.iter_parsed(wanted):
            found.extend(d for d in digests if wanted is None or d.date in wanted)
        return Archive(tuple(merge_digests(found)), self.problems)

    def fingerprint(self, days: Iterable[dt.date] | None = None) -> str:
        """A hash of the content of every file holding one of ``days`` (all when None)."""
        entries = self.entries if days is None else self.files_for(days)
        digest = hashlib.sha256()
        for entry in sorted(entries, key=lambda e: e.path):
            digest.update(f"{entry.path}\0{entry.sha256}\n".encode())
        return digest.hexdigest()


def catalog(cache_dir: Path, folders: Iterable[Path]) -> Catalog:
    """Scan ``folders`` (a missing one is a problem, as in :func:`~newsletter.archive.digest.load_archive`)."""
    entries: list[FileEntry] = []
    files = hashed = parsed = removed = 0
    for folder in folders:
        if not folder.exists():
            entries.append(
                FileEntry(
                    str(folder),
                    0,
                    0,
                    0,
                    0,
                    "!",
                    (Problem(str(folder), 0, "source folder does not exist"),),
                    (),
                )
            )
            continue
        found, stats = scan_folder(cache_dir, folder)
        entries.extend(found)
        files += stats.files
        hashed += stats.hashed
        parsed += stats.parsed
        removed += stats.removed
    return Catalog(cache_dir, entries, ScanStats(files, hashed, parsed, removed))
