"""What search matches: Korean by bigrams (inside words, across particles), English
lowercased and stemmed, ids whole; and the ranking with votes as tie-breaker."""

from __future__ import annotations

from newsletter.publish.search_text import Entry, query_words, rank, shard_of, snippet, terms


def _matches(query: str, text: str) -> bool:
    held = terms(text)
    return all(set(word_terms) <= held for _, word_terms in query_words(query))


def test_korean_matches_inside_words_and_across_particles() -> None:
    assert _matches("가지치기", "채널을 가지치기를 통해")
    assert _matches("언어 모델", "대규모 언어 모델에서 성능이")
    assert not _matches("언어 모델", "대규모 언어 처리에서")
    assert not _matches("가지치기", "가지와 치기")


def test_english_is_case_insensitive_and_stemmed_and_ids_stay_whole() -> None:
    assert _matches("Pruning", "we prune the cache")
    assert _matches("models", "Language Model")
    assert _matches("KV cache", "KV 캐시(KV cache)를 줄입니다")
    assert _matches("KV 캐시", "KV 캐시(KV cache)를 줄입니다")
    assert "2407.21018" in terms("arXiv 2407.21018")
    assert not _matches("2407.21018", "2407.21019")


def test_shards_are_stable_and_in_range() -> None:
    # The client computes the same FNV-1a: these values are pinned in its test too.
    assert shard_of("모델", 256) == shard_of("모델", 256)
    assert {shard_of(t, 256) for t in ("kv", "cach", "모델", "2407.21018")} <= set(range(256))
    assert shard_of("a", 2**32) == 0xE40C292C


def test_rank_prefers_title_hits_then_votes_then_the_latest() -> None:
    postings = {"kv": {0: False, 1: True, 2: False, 3: False}}
    votes = [5, 1, 9, 9]
    days = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    ranked = [doc for doc, _ in rank("KV", postings, 4, votes, days)]
    assert ranked == [1, 3, 2, 0]
    assert rank("KV nothing", postings, 4, votes, days) == []
    assert rank("", postings, 4, votes, days) == []


def test_snippet_cuts_around_the_first_match_and_marks_it() -> None:
    text = "앞부분 " * 40 + "KV 캐시를 가지치기하는 방법" + " 뒷부분" * 40
    cut, spans = snippet(text, "가지치기 kv")
    assert cut.startswith("…") and cut.endswith("…")
    marked = [cut[a:b] for a, b in spans]
    assert "가지치기" in marked and "KV" in marked
    entry = Entry("2024-07-31", "2407.21018", "T", "A, B", 3, "s")
    assert Entry.from_json("2024-07-31", entry.to_json()) == entry
