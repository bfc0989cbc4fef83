"""Daily and weekly top-N: ordering, ties, unknown votes, ISO weeks in Asia/Seoul."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from newsletter.models import Archive, Digest, Paper
from newsletter.select import IsoWeek, rank, top_daily, top_weekly, weekly_picks

SEOUL = ZoneInfo("Asia/Seoul")


def _paper(arxiv_id: str, votes: int | None) -> Paper:
    return Paper(arxiv_id=arxiv_id, title=f"Paper {arxiv_id}", votes=votes)


def _digest(day: str, *papers: tuple[str, int | None]) -> Digest:
    return Digest(dt.date.fromisoformat(day), tuple(_paper(i, v) for i, v in papers))


def test_daily_orders_by_votes_then_position() -> None:
    digest = _digest("2024-05-20", ("a", 3), ("b", 7), ("c", 3), ("d", 7))
    picks = top_daily(digest, 10)
    assert [(p.rank, p.paper.arxiv_id) for p in picks] == [(1, "b"), (2, "d"), (3, "a"), (4, "c")]


def test_unknown_votes_come_after_all_known_even_zero() -> None:
    digest = _digest("2024-05-20", ("a", None), ("b", 0), ("c", None), ("d", 2))
    assert [p.paper.arxiv_id for p in top_daily(digest, 10)] == ["d", "b", "a", "c"]
    assert [p.votes for p in top_daily(digest, 10)] == [2, 0, None, None]


def test_daily_top_n_cuts(seeds_archive: Archive) -> None:
    digest = seeds_archive.by_date(dt.date(2024, 2, 2))
    assert digest is not None
    picks = top_daily(digest, 3)
    assert [(p.paper.arxiv_id, p.votes) for p in picks] == [
        ("2402.00838", 42),
        ("2402.00159", 31),
        ("2402.00858", 11),  # ties with 2402.00769 at 11: earlier in the file wins
    ]


def test_weekly_counts_a_paper_once_with_highest_votes_and_first_date() -> None:
    monday = _digest("2024-01-29", ("x", 5), ("y", 9))
    tuesday = _digest("2024-01-30", ("x", 12), ("z", 9))
    picks = top_weekly([monday, tuesday], IsoWeek(2024, 5), 10)
    assert [(p.paper.arxiv_id, p.votes, p.date.day) for p in picks] == [
        ("x", 12, 29),
        ("y", 9, 29),  # ties with z at 9: same position (1), earlier date wins
        ("z", 9, 30),
    ]


def test_weekly_tie_on_position_and_date_falls_back_to_arxiv_id() -> None:
    picks = rank(weekly_picks([_digest("2024-01-29", ("b", 1)), _digest("2024-01-29", ("a", 1))]))
    assert [p.paper.arxiv_id for p in picks] == ["a", "b"]


def test_week_is_monday_to_sunday() -> None:
    sunday_before = _digest("2024-01-28", ("before", 100))
    monday = _digest("2024-01-29", ("mon", 1))
    sunday = _digest("2024-02-04", ("sun", 2))
    next_monday = _digest("2024-02-05", ("after", 100))
    picks = top_weekly([sunday_before, monday, sunday, next_monday], IsoWeek(2024, 5), 10)
    assert [p.paper.arxiv_id for p in picks] == ["sun", "mon"]


def test_seeds_week_5(seeds_archive: Archive) -> None:
    picks = top_weekly(seeds_archive.digests, IsoWeek.parse("2024-W05"), 10)
    assert len(picks) == 10
    assert picks[0].paper.arxiv_id == "2402.00838"
    assert top_weekly(seeds_archive.digests, IsoWeek.parse("2024-W06"), 10) == []


def test_iso_week_parse_and_format() -> None:
    week = IsoWeek.parse("2024-W05")
    assert str(week) == "2024-W05"
    assert (week.monday, week.sunday) == (dt.date(2024, 1, 29), dt.date(2024, 2, 4))
    assert IsoWeek.parse("2020w53") == IsoWeek(2020, 53)
    # 2024-12-30 belongs to ISO year 2025.
    assert IsoWeek.of(dt.date(2024, 12, 30)) == IsoWeek(2025, 1)
    for bad in ("2024-05", "2024-W54", "2021-W53", "W05"):
        with pytest.raises(ValueError):
            IsoWeek.parse(bad)


def test_previous_week_is_taken_in_seoul_not_utc() -> None:
    # Monday 01:00 in Seoul is still Sunday in UTC.
    now = dt.datetime(2024, 2, 4, 16, 0, tzinfo=dt.UTC)
    assert IsoWeek.previous(now, SEOUL) == IsoWeek(2024, 5)
    assert IsoWeek.previous(now, ZoneInfo("UTC")) == IsoWeek(2024, 4)


def test_selection_is_deterministic(seeds_archive: Archive) -> None:
    shuffled = list(reversed(seeds_archive.digests))
    week = IsoWeek(2024, 5)
    assert top_weekly(shuffled, week, 10) == top_weekly(seeds_archive.digests, week, 10)
