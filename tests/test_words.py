"""Counts in messages."""

from __future__ import annotations

from newsletter.words import count


def test_one_is_singular_and_every_other_number_plural() -> None:
    assert count(1, "paper") == "1 paper"
    assert count(0, "problem") == "0 problems"
    assert count(2, "digest") == "2 digests"
    assert count(1, "queued delivery", "queued deliveries") == "1 queued delivery"
    assert count(3, "summary", "summaries") == "3 summaries"
