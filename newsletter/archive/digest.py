"""The digest parser: Markdown digest files in, :class:`Digest` objects out.

The format is line-oriented, so this is a single pass over lines with cheap
prefix tests rather than a Markdown parser: it is both faster and stricter about
what it accepts. Every defect becomes a :class:`Problem` carrying file and line;
the good papers beside it are kept.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from pathlib import Path

from newsletter.models import HF_BASE, Archive, Digest, Media, MediaKind, Paper, Problem, Section

log = logging.getLogger(__name__)

__all__ = [
    "CUT_OFF",
    "DigestError",
    "load_archive",
    "merge_digests",
    "parse_bytes",
    "parse_file",
    "parse_text",
]


class DigestError(Exception):
    """A digest that cannot be read at all (not UTF-8, empty, no day heading)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


# The problems that say a file was cut off (a copy still being written, or left half-written).
ENDS_MID_LINE = "file ends mid-line (truncated?)"
NO_SUMMARY = "paper has no summary (truncated file?)"
CUT_OFF = (ENDS_MID_LINE, NO_SUMMARY)

_DAY_RE = re.compile(r"##\s*Daily Papers\s*\(\s*(\d{4}-\d{2}-\d{2})\s*\)\s*$")
_ARXIV_RE = re.compile(
    r"https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/"
    r"(\d{4}\.\d{4,5}|[a-z][a-z.\-]*/\d{7})(?:v\d+)?(?:\.pdf)?/?$",
    re.IGNORECASE,
)
# C0 and C1 control characters (TAB included): feed writers reject them and they
# never carry meaning in a title or summary.
_CTRL_RE = re.compile("[\x00-\x1f\x7f-\x9f]+")
_SPACES_RE = re.compile(r"\s{2,}")
_BULLET_RE = re.compile(r"([ \t]*)(?:[-*+]|\d{1,3}[.)])(?:[ \t]+|$)")
# ``**Label**:``, ``***Label***:``, the malformed ``***Label**:`` and ``**Label:**``.
_LABEL_RE = re.compile(r"\*{2,3}([^*\n]{1,60}?)\s*(?::\s*\*{2,3}|\*{2,3}\s*:)\s*")
_IMAGE_RE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)>\s]*)>?\s*\)")
_WATCH_RE = re.compile(r"\[Watch Video\]\s*\(?\s*([^)\s]+)\)?", re.IGNORECASE)
_SRC_RE = re.compile(r"""<video\b[^>]*?\bsrc\s*=\s*(["'])(.*?)\1""", re.IGNORECASE)
_PY_STR_RE = re.compile(r"""\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*,?""")
_VOTE_RE = re.compile(r"Votes?\s*:\s*(.*)$", re.IGNORECASE)


def clean_text(text: str) -> str:
    """Replace control characters with spaces and fold runs of white space."""
    # isprintable() is a fast C scan that is true for almost every line; only the rest
    # (control characters, but also e.g. no-break spaces) needs the regex.
    if not text.isprintable() and _CTRL_RE.search(text):
        text = _CTRL_RE.sub(" ", text)
        text = _SPACES_RE.sub(" ", text)
    return text.strip()


def _http_url(url: str) -> str | None:
    """An absolute http(s) URL, resolving site-relative ones against Hugging Face."""
    url = url.strip()
    if url.startswith("/") and not url.startswith("//"):
        # A site-relative path: what urljoin would give, at a fraction of its cost.
        url = HF_BASE + url
    scheme = url[:8].lower()
    if scheme.startswith(("https://", "http://")) and len(url) > 8 and url.isprintable():
        return url
    return None


def _parse_authors(value: str) -> tuple[list[str], str | None]:
    value = value.strip()
    problem = None
    names: list[str]
    if value.startswith("["):
        # A Python list literal, read with a regex: ast.literal_eval would compile each line.
        inner = value[1:-1] if value.endswith("]") else value[1:]
        names = [a or b for a, b in _PY_STR_RE.findall(inner)]
        if any("\\" in n for n in names):
            names = [
                n.encode("latin-1", "backslashreplace").decode("unicode_escape") for n in names
            ]
        if not value.endswith("]") or _PY_STR_RE.sub("", inner).strip(" ,"):
            problem = "malformed author list; read it as comma-separated names"
            names = [n.strip().strip("'\"") for n in inner.split(",")]
    else:
        names = value.split(",")
    cleaned = [n.strip() for n in names] if value.isprintable() else list(map(clean_text, names))
    # "+" marks hidden authors on the Hugging Face page; dict keeps first-seen order.
    unique = dict.fromkeys(cleaned)
    unique.pop("+", None)
    unique.pop("", None)
    return list(unique), problem


class _PaperBuilder:
    __slots__ = ("arxiv_id", "authors", "indents", "line", "media", "sections", "title", "votes")

    def __init__(self, arxiv_id: str, title: str, line: int) -> None:
        self.arxiv_id = arxiv_id
        self.title = title
        self.line = line
        self.media: Media | None = None
        self.votes: int | None = None
        self.authors: list[str] = []
        self.sections: list[list[object]] = []  # [label, text, level], mutable while reading
        self.indents: list[int] = []

    def set_media(self, kind: MediaKind, url: str) -> None:
        # A video announced twice (link and <video> tag) is one video; the first media wins.
        if self.media is None:
            self.media = Media(kind, url)

    def build(self) -> Paper:
        return Paper(
            arxiv_id=self.arxiv_id,
            title=self.title,
            media=self.media,
            votes=self.votes,
            authors=tuple(self.authors),
            sections=tuple([Section(*s) for s in self.sections]),  # type: ignore[arg-type]
            line=self.line,
        )


def _merge_papers(first: Paper, later: Paper) -> Paper:
    """One paper seen twice on the same day (a later run appended): keep the first, fill gaps."""
    votes = first.votes
    if later.votes is not None and (votes is None or later.votes > votes):
        votes = later.votes
    return Paper(
        arxiv_id=first.arxiv_id,
        title=first.title or later.title,
        media=first.media or later.media,
        votes=votes,
        authors=first.authors or later.authors,
        sections=first.sections or later.sections,
        line=first.line,
    )


def parse_text(text: str, file: str = "<string>") -> tuple[list[Digest], list[Problem]]:
    """Parse one digest file's text into digests (one per day heading date) and problems.

    Raises :class:`DigestError` only when nothing at all can be read from the text.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise DigestError(Problem(file, 0, "empty file: no digest in it"))

    problems: list[Problem] = []
    days: dict[dt.date, dict[str, Paper]] = {}
    day: dict[str, Paper] | None = None
    day_seen = False
    paper: _PaperBuilder | None = None
    skipping = False  # inside a block whose heading could not be read
    last_was_text = False

    # str.splitlines() would also split on form feeds and U+2028 inside a title.
    lines = text.split("\n")
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip()
        if not line:
            last_was_text = False
            continue
        first = line[0]
        if first == "#" and line.startswith("##"):
            _finish(paper, day, file, problems)
            if line.startswith("###"):
                paper = _start_paper(line, number, file, day is not None, day_seen, problems)
                skipping = paper is None
                last_was_text = False
                continue
            paper = None
            skipping = False
            day_seen = True
            date = _read_day_heading(line, number, file, problems)
            day = None if date is None else days.setdefault(date, {})
            continue
        if paper is None:
            if not skipping and first != "#":
                problems.append(_outside_paper(line, number, file, day_seen))
            continue
        if first == "-" and line.startswith("- ") and not line.startswith("- **"):
            # The common case, inline: a plain top-level bullet.
            indents = paper.indents
            if len(indents) != 1 or indents[0]:
                paper.indents = [0]
            body = line[2:]
            body = body.strip() if body.isprintable() else clean_text(body)
            paper.sections.append([None, body, 0])
            last_was_text = True
            continue
        _read_body_line(paper, line, number, file, problems, last_was_text)
        last_was_text = bool(paper.sections)

    _finish(paper, day, file, problems)
    return _digests(text, file, len(lines), days, day_seen, problems)


def _finish(
    paper: _PaperBuilder | None,
    day: dict[str, Paper] | None,
    file: str,
    problems: list[Problem],
) -> None:
    """File the paper read so far under its day (a paper seen twice that day is merged)."""
    if paper is None:
        return
    built = paper.build()
    if not built.sections:
        problems.append(Problem(file, built.line, NO_SUMMARY))
    if day is None:
        return
    previous = day.get(built.arxiv_id)
    day[built.arxiv_id] = _merge_papers(previous, built) if previous else built


def _start_paper(
    line: str, number: int, file: str, in_day: bool, day_seen: bool, problems: list[Problem]
) -> _PaperBuilder | None:
    """The paper a ``###`` heading opens, or None (and a problem) when it cannot be read."""
    if not in_day:
        why = (
            "paper under an unreadable day heading; skipped"
            if day_seen
            else "paper before any '## Daily Papers (YYYY-MM-DD)' heading; skipped"
        )
        problems.append(Problem(file, number, why))
        return None
    built = _read_heading(line.lstrip("#").strip())
    if isinstance(built, str):
        problems.append(Problem(file, number, built))
        return None
    return _PaperBuilder(built[0], built[1], number)


def _read_day_heading(line: str, number: int, file: str, problems: list[Problem]) -> dt.date | None:
    """The date of a ``##`` heading, or None (and a problem) when it cannot be read."""
    match = _DAY_RE.match(line)
    if match is None:
        problems.append(
            Problem(
                file,
                number,
                f"unrecognized heading {line[:60]!r}; expected '## Daily Papers (YYYY-MM-DD)'",
            )
        )
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        problems.append(Problem(file, number, f"invalid date {match.group(1)!r} in day heading"))
        return None


def _outside_paper(line: str, number: int, file: str, day_seen: bool) -> Problem:
    where = "after the day heading" if day_seen else "before any day heading"
    return Problem(file, number, f"text outside a paper block {where}: {line[:40]!r}")


def _digests(
    text: str,
    file: str,
    last_line: int,
    days: dict[dt.date, dict[str, Paper]],
    day_seen: bool,
    problems: list[Problem],
) -> tuple[list[Digest], list[Problem]]:
    """What :func:`parse_text` read, once its text is read to the end."""
    if not text.endswith("\n"):
        # Every digest writer ends the file with a newline; a missing one means a cut-off copy.
        problems.append(Problem(file, last_line, ENDS_MID_LINE))
    if not day_seen:
        raise DigestError(Problem(file, 1, "no '## Daily Papers (YYYY-MM-DD)' heading"))
    if not days and not problems:
        problems.append(Problem(file, last_line, "day heading without any paper"))
    digests = [Digest(date, tuple(papers.values()), (file,)) for date, papers in days.items()]
    return digests, problems


def _read_heading(heading: str) -> tuple[str, str] | str:
    """``[Title](https://arxiv.org/abs/ID)`` -> (arxiv_id, title), or an error message."""
    cut = heading.rfind("](")
    if not heading.startswith("[") or cut < 0 or not heading.endswith(")"):
        return f"paper heading is not '### [Title](https://arxiv.org/abs/ID)': {heading[:60]!r}"
    url = heading[cut + 2 : -1].strip()
    match = _ARXIV_RE.match(url)
    if match is None:
        return f"paper heading links to {url[:60]!r}, not an arXiv paper"
    title = clean_text(heading[1:cut])
    if not title:
        return "paper heading has an empty title"
    return match.group(1), title


def _read_body_line(
    paper: _PaperBuilder,
    line: str,
    number: int,
    file: str,
    problems: list[Problem],
    continues: bool,
) -> None:
    if line.startswith("- "):  # the common case, first
        _add_point(paper, line[2:], 0)
        return
    stripped = line.lstrip()
    first = stripped[0]
    bullet = _BULLET_RE.match(line) if first in "-*+0123456789" else None
    if bullet is not None and not stripped.startswith("**"):
        _add_point(paper, line[bullet.end() :], len(bullet.group(1).expandtabs(4)))
        return
    if (first in "!<" or stripped.startswith("[Watch")) and _read_media(
        paper, stripped, number, file, problems
    ):
        return
    if first in "VvAa":
        vote = _VOTE_RE.match(stripped)
        if vote is not None:
            value = vote.group(1).strip()
            if value in ("", "-"):
                paper.votes = None
            else:
                try:
                    paper.votes = int(value.replace(",", ""))
                except ValueError:
                    problems.append(Problem(file, number, f"vote is not a number: {value[:20]!r}"))
            return
        if stripped[:8].lower() == "authors:":
            authors, problem = _parse_authors(stripped[8:])
            if problem:
                problems.append(Problem(file, number, problem))
            paper.authors = authors
            return
    # Free text: a wrapped continuation of the last point, or a point of its own.
    text = clean_text(stripped)
    if continues and paper.sections:
        last = paper.sections[-1]
        last[1] = f"{last[1]} {text}" if last[1] else text
    else:
        _add_point(paper, stripped, 0)


def _add_point(paper: _PaperBuilder, body: str, indent: int) -> None:
    indents = paper.indents
    if indent == 0 and len(indents) < 2:
        paper.indents = [0]
        level = 0
    else:
        while indents and indent < indents[-1]:
            indents.pop()
        if not indents or indent > indents[-1]:
            indents.append(indent)
        level = len(indents) - 1
    label: str | None = None
    if body.startswith("**"):
        match = _LABEL_RE.match(body)
        if match is not None:
            label = clean_text(match.group(1))
            body = body[match.end() :]
    paper.sections.append([label, clean_text(body), level])


def _read_media(
    paper: _PaperBuilder, line: str, number: int, file: str, problems: list[Problem]
) -> bool:
    found: list[tuple[MediaKind, str]] = []
    if line.startswith("!["):
        match = _IMAGE_RE.match(line)
        if match:
            found.append(("image", match.group(1)))
    else:
        watch = _WATCH_RE.search(line)
        if watch:
            found.append(("video", watch.group(1)))
        found.extend(("video", m.group(2)) for m in _SRC_RE.finditer(line))
    if not found:
        # HTML wrappers around a video tag (``<div>``, ``</div>``) carry nothing.
        return line.startswith("<")
    for kind, raw in found:
        url = _http_url(raw)
        if url is None:
            problems.append(
                Problem(file, number, f"{kind} URL is not http(s); dropped: {raw[:60]!r}")
            )
            continue
        paper.set_media(kind, url)
    return True


def parse_bytes(data: bytes, file: str = "<bytes>") -> tuple[list[Digest], list[Problem]]:
    """Decode UTF-8 (a BOM is allowed) and parse; undecodable input is a :class:`DigestError`."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DigestError(
            Problem(file, line, f"not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8")
        ) from None
    return parse_text(text, file)


def parse_file(path: Path) -> tuple[list[Digest], list[Problem]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DigestError(Problem(str(path), 0, f"cannot read: {exc.strerror or exc}")) from None
    return parse_bytes(data, str(path))


def merge_digests(digests: Iterable[Digest]) -> list[Digest]:
    """Merge digests of the same date (from several files), oldest first."""
    by_date: dict[dt.date, tuple[dict[str, Paper], list[str]]] = {}
    for digest in digests:
        papers, sources = by_date.setdefault(digest.date, ({}, []))
        for paper in digest.papers:
            previous = papers.get(paper.arxiv_id)
            papers[paper.arxiv_id] = _merge_papers(previous, paper) if previous else paper
        sources.extend(s for s in digest.sources if s not in sources)
    return [
        Digest(date, tuple(papers.values()), tuple(sources))
        for date, (papers, sources) in sorted(by_date.items())
    ]


def digest_files(source: Path) -> list[Path]:
    """Every regular, non-hidden file under ``source``, in a stable order."""
    if source.is_file():
        return [source]
    return sorted(
        p
        for p in source.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts)
    )


def load_archive(source: Path) -> Archive:
    """Load every digest under ``source``; unreadable files become problems, never exceptions."""
    if not source.exists():
        return Archive((), (Problem(str(source), 0, "source folder does not exist"),))
    found: list[Digest] = []
    problems: list[Problem] = []
    for path in digest_files(source):
        try:
            digests, file_problems = parse_file(path)
        except DigestError as exc:
            problems.append(exc.problem)
            continue
        found.extend(digests)
        problems.extend(file_problems)
    log.debug("loaded %d files from %s with %d problems", len(found), source, len(problems))
    return Archive(tuple(merge_digests(found)), tuple(problems))
