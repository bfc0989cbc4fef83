"""The parsed archive as plain typed data: no I/O, no formatting."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

HF_BASE = "https://huggingface.co"

MediaKind = Literal["image", "video"]


class Media(NamedTuple):
    kind: MediaKind
    url: str


class Section(NamedTuple):
    """One summary point: a labelled section (``What's New``) or a plain bullet.

    ``level`` is the nesting depth of the bullet (0 for top-level points). A named
    tuple rather than a dataclass: an archive has tens of thousands, and a tuple is
    the cheapest immutable record to build.
    """

    label: str | None
    text: str
    level: int = 0


@dataclass(frozen=True, slots=True)
class Paper:
    arxiv_id: str
    title: str
    media: Media | None = None
    votes: int | None = None
    authors: tuple[str, ...] = ()
    sections: tuple[Section, ...] = ()
    line: int = 0

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv_id}"

    @property
    def hf_url(self) -> str:
        return f"{HF_BASE}/papers/{self.arxiv_id}"

    def first_point(self) -> str:
        """The first summary point as plain text (empty when there is none)."""
        return self.sections[0].text if self.sections else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "arxiv_id": self.arxiv_id,
            "title": self.title,
            "url": self.url,
            "hf_url": self.hf_url,
            "votes": self.votes,
            "authors": list(self.authors),
            "media": {"kind": self.media.kind, "url": self.media.url} if self.media else None,
            "sections": [
                {"label": s.label, "text": s.text, "level": s.level} for s in self.sections
            ],
        }


@dataclass(frozen=True, slots=True)
class Digest:
    """One day's papers in file order. ``sources`` names every file that contributed."""

    date: dt.date
    papers: tuple[Paper, ...]
    sources: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        return self.sources[0] if self.sources else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.date.isoformat(),
            "source": self.source,
            "papers": [p.to_json() for p in self.papers],
        }


@dataclass(frozen=True, slots=True)
class Problem:
    """A defect found in the input: what is wrong and exactly where."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclass(frozen=True, slots=True)
class Archive:
    """Every digest that loaded, oldest first, and every problem met on the way."""

    digests: tuple[Digest, ...] = ()
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    def by_date(self, day: dt.date) -> Digest | None:
        for d in self.digests:
            if d.date == day:
                return d
        return None

    @property
    def paper_count(self) -> int:
        return sum(len(d.papers) for d in self.digests)

    def to_json(self) -> dict[str, Any]:
        return {
            "digests": [d.to_json() for d in self.digests],
            "errors": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True, slots=True)
class Pick:
    """A selected paper: where it first appeared, and the votes it is ranked by."""

    paper: Paper
    date: dt.date
    position: int
    votes: int | None
    rank: int = 0
