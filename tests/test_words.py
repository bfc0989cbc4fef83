"""Counts in messages."""

from __future__ import annotations

from newsletter.words import TEXT_WIDTH, count, wrap


def test_one_is_singular_and_every_other_number_plural() -> None:
    assert count(1, "paper") == "1 paper"
    assert count(0, "problem") == "0 problems"
    assert count(2, "digest") == "2 digests"
    assert count(1, "queued delivery", "queued deliveries") == "1 queued delivery"
    assert count(3, "summary", "summaries") == "3 summaries"


# -- wrapping the text part ------------------------------------------------------------------

URL = "https://github.com/example-org/a-rather-long-repository-name/blob/main/docs/usage-guide.md"
KOREAN = (
    "대규모 언어 모델의 추론 능력을 향상시키기 위한 새로운 방법을 제안하고 실험으로 검증합니다. "
)


def _fits(text: str, width: int = TEXT_WIDTH) -> None:
    for line in text.split("\n"):
        assert len(line) <= width or " " not in line.strip(), line


def test_long_lines_wrap_at_spaces_within_78_characters() -> None:
    text = "Last week's most upvoted papers " * 8 + "\n\n" + KOREAN * 4 + "\n"
    wrapped = wrap(text)
    _fits(wrapped)
    assert max(map(len, wrapped.splitlines())) > 60  # filled, not broken early
    # Only line breaks were added: the words, their order and the blank line are kept.
    assert wrapped.split() == text.split() and "\n\n" in wrapped and wrapped.endswith("\n")
    # Korean is broken between words (at spaces), never inside one.
    assert {w for line in wrapped.splitlines() for w in line.split()} == set(text.split())


def test_short_lines_are_left_exactly_as_they_are() -> None:
    text = "1위  Meltemi\n  - 두 칸 들여 쓴 점\n\n" + "=" * 60 + "\n"
    assert wrap(text) == text


def test_a_url_is_never_cut_and_stands_alone_when_it_does_not_fit() -> None:
    text = f"코드는 다음 주소에 공개되어 있습니다: {URL} 에서 받을 수 있습니다. " + KOREAN
    wrapped = wrap(text)
    _fits(wrapped)
    assert URL in wrapped.splitlines()  # one line, whole: the only line over 78
    assert f"동영상 보기:\n{URL}" == wrap(f"동영상 보기: {URL}")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def test_list_items_and_headings_hang_under_their_text() -> None:
    item = wrap("  - " + KOREAN * 2).splitlines()
    assert item[0].startswith("  - ") and len(item) > 1
    assert all(_indent(line) == 4 for line in item[1:])
    numbered = wrap("10. " + "Scaling Long-Context Reasoning " * 4).splitlines()
    assert len(numbered) > 1 and all(_indent(line) == 4 for line in numbered[1:])
    heading = wrap("No. 1  " + "A Universal Quantum Chemistry Dataset " * 3).splitlines()
    assert len(heading) > 1 and all(_indent(line) == 7 for line in heading[1:])


def test_a_no_break_space_keeps_the_votes_with_their_number() -> None:
    # Titles of every length around the width: with a plain space, some would leave
    # "추천" at the end of one line and "123" alone on the next.
    for filler in range(55, 75):
        line = "1. " + "x" * filler + " · 추천\u00a0123"
        parts = wrap(line).splitlines()
        assert len(parts) == (1 if len(line) <= TEXT_WIDTH else 2)
        assert not any(part.endswith("추천") or part.lstrip().startswith("123") for part in parts)


def test_a_placeholder_for_a_later_url_gets_a_line_of_its_own() -> None:
    mark = "urn:x-newsletter:unsubscribe:0123abcd"
    text = f"구독 취소: {mark}\n문의: editor@example.org\n"
    assert wrap(text, alone=[mark, ""]) == f"구독 취소:\n{mark}\n문의: editor@example.org\n"
