"""``newsletter search``: the archive searched as the site's search page searches it (the
same terms and ranking, :mod:`newsletter.publish.search_text`), straight from the
digests, so it needs no built site."""

from __future__ import annotations

from newsletter.archive.sources import local_catalog
from newsletter.config import Config
from newsletter.publish.search_index import entries_of
from newsletter.publish.search_text import Entry, Hit, rank, terms

__all__ = ["find", "rank_entries"]


def rank_entries(entries: list[Entry], query: str, n: int) -> list[Hit]:
    """The ``n`` best of ``entries`` for ``query``, each paper once (its best showing)."""
    postings: dict[str, dict[int, bool]] = {}
    for doc, entry in enumerate(entries):
        heading = terms(entry.heading())
        for term in heading | terms(entry.summary):
            postings.setdefault(term, {})[doc] = term in heading
    votes = [e.votes for e in entries]
    days = [e.day for e in entries]
    hits: list[Hit] = []
    seen: set[str] = set()
    for doc, score in rank(query, postings, len(entries), votes, days):
        entry = entries[doc]
        if entry.arxiv_id in seen:
            continue
        seen.add(entry.arxiv_id)
        hits.append(Hit(entry, score))
        if len(hits) == n:
            break
    return hits


def find(cfg: Config, query: str, n: int = 10) -> list[Hit]:
    """The ``n`` papers of the archive that best match ``query``, best first."""
    archive = local_catalog(cfg).load()
    digests = sorted(archive.digests, key=lambda digest: digest.date)
    entries = [entry for digest in digests for entry in entries_of([digest])]
    return rank_entries(entries, query, n)
