"""What search matches, and how it ranks: the one definition the site's index, its
client (``templates/site/search.js``, which repeats these rules line for line) and
``newsletter search`` share.

Korean is matched by character bigrams: a word of Hangul syllables becomes the pairs of
neighbouring syllables (``가지치기`` -> 가지, 지치, 치기), so a query word matches inside
longer words and whatever particle follows (``가지치기를``, ``모델에서``) without a
dictionary. Latin letters and digits are lowercased and lightly stemmed (``pruning``,
``pruned`` and ``prune`` meet at ``prun``); an arXiv id stays one term. The summaries put
English terms in parentheses (``KV 캐시(KV cache)``), so either script finds them.

A paper matches when it holds every term of the query. Its score is the sum over the
terms of their rarity (``ln(1 + N/df)``), counted three times where the term is in the
title, the authors or the id; ties go to the most voted, then the latest.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "FIELD_WEIGHT",
    "Entry",
    "Hit",
    "query_words",
    "rank",
    "shard_of",
    "snippet",
    "terms",
]

# Runs of Latin letters and digits (an arXiv id or a version with its dots kept whole),
# or of Hangul syllables.
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)*|[\uac00-\ud7a3]+")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
# A term found in the title, authors or id counts this many times one in the summary.
FIELD_WEIGHT = 3
SNIPPET_CHARS = 160


def _stem(word: str) -> str:
    """A light English stemmer: plural, -ing, -ed and a final e go."""
    if not word.isalpha() or not word.isascii():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and len(word) > 3 and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) > 5:
        word = word[:-3]
    elif word.endswith("ed") and len(word) > 4:
        word = word[:-2]
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


def _normal(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


# Words repeat across summaries far more than they differ: an index build meets each
# distinct word about a hundred times.
@functools.lru_cache(maxsize=1 << 16)
def _word_terms(word: str) -> tuple[str, ...]:
    if _HANGUL.match(word):
        if len(word) == 1:
            return (word,)
        return tuple(word[i : i + 2] for i in range(len(word) - 1))
    return (_stem(word),)


def terms(text: str) -> set[str]:
    """Every term of ``text``, as the index keeps them."""
    found: set[str] = set()
    for word in _WORD.findall(_normal(text)):
        found.update(_word_terms(word))
    return found


def query_words(query: str) -> list[tuple[str, list[str]]]:
    """The words of a query, each with its terms (a paper must hold them all)."""
    return [(word, list(_word_terms(word))) for word in _WORD.findall(_normal(query))]


def shard_of(term: str, shards: int) -> int:
    """FNV-1a over the term's code points: which file of a segment holds it."""
    h = 0x811C9DC5
    for char in term:
        h = ((h ^ ord(char)) * 0x01000193) & 0xFFFFFFFF
    return h % shards


@dataclass(frozen=True, slots=True)
class Entry:
    """One paper as the index holds it: what results show and snippets are cut from."""

    day: str
    arxiv_id: str
    title: str
    authors: str
    votes: int
    summary: str

    def to_json(self) -> list[object]:
        return [self.arxiv_id, self.title, self.authors, self.votes, self.summary]

    @classmethod
    def from_json(cls, day: str, row: Sequence[object]) -> Entry:
        arxiv_id, title, authors, votes, summary = row
        return cls(day, str(arxiv_id), str(title), str(authors), int(str(votes)), str(summary))

    def heading(self) -> str:
        """The text whose terms weigh more: the title, the authors and the id."""
        return f"{self.title} {self.authors} {self.arxiv_id}"


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    score: float


def rank(
    query: str,
    postings: Mapping[str, Mapping[int, bool]],
    total: int,
    votes: Sequence[int],
    days: Sequence[str],
) -> list[tuple[int, float]]:
    """The documents matching every term of ``query``, best first, with their scores.
    ``postings``: term -> {doc: in the heading}; ``votes`` and ``days`` by doc."""
    needed = [term for _, word_terms in query_words(query) for term in word_terms]
    if not needed:
        return []
    unique = list(dict.fromkeys(needed))
    lists = [postings.get(term, {}) for term in unique]
    if any(not found for found in lists):
        return []
    smallest = min(lists, key=len)
    scores = []
    for doc in smallest:
        score = 0.0
        for found in lists:
            if doc not in found:
                break
            idf = math.log(1 + total / len(found))
            score += idf * (FIELD_WEIGHT if found[doc] else 1)
        else:
            scores.append((doc, round(score, 6)))
    scores.sort(key=lambda item: (-item[1], -votes[item[0]], _descending(days[item[0]]), item[0]))
    return scores


def _descending(day: str) -> int:
    return -int(day.replace("-", ""))


def snippet(text: str, query: str, size: int = SNIPPET_CHARS) -> tuple[str, list[tuple[int, int]]]:
    """About ``size`` characters of ``text`` around the first place a query word occurs,
    and the spans (start, end) in it to highlight."""
    # A Hangul word is looked for whole; an English one by its stem (``prun`` in "pruned").
    marks = {w if _HANGUL.match(w) else t[0] for w, t in query_words(query)}
    words = sorted(marks, key=len, reverse=True)
    lowered = _normal(text)
    if len(lowered) != len(text):  # normalizing moved the offsets: search the text as it is
        lowered = text.lower()
    first = min((i for i in (lowered.find(w) for w in words) if i >= 0), default=0)
    start = max(0, first - size // 4)
    end = min(len(text), start + size)
    cut = text[start:end]
    spans = _spans(lowered[start:end], words)
    prefix = "…" if start else ""
    suffix = "…" if end < len(text) else ""
    shift = len(prefix)
    return prefix + cut + suffix, [(a + shift, b + shift) for a, b in spans]


def _spans(lowered: str, words: Iterable[str]) -> list[tuple[int, int]]:
    marked = [False] * len(lowered)
    for word in words:
        i = lowered.find(word)
        while i >= 0:
            for k in range(i, i + len(word)):
                marked[k] = True
            i = lowered.find(word, i + len(word))
    spans: list[tuple[int, int]] = []
    for k, on in enumerate(marked):
        if on and (not spans or spans[-1][1] != k):
            spans.append((k, k + 1))
        elif on:
            spans[-1] = (spans[-1][0], k + 1)
    return spans
