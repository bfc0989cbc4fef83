"""The digest parser: the four seeds exactly, one fixture per format variant, bad input."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.archive.digest import DigestError, load_archive, parse_bytes, parse_file, parse_text
from newsletter.models import Archive, Media, Paper

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VARIANTS = FIXTURES / "digests"
BAD = FIXTURES / "bad"


def _one(path: Path) -> tuple[list[Paper], list[str]]:
    digests, problems = parse_file(path)
    assert len(digests) == 1
    return list(digests[0].papers), [str(p) for p in problems]


def _paper(papers: list[Paper], arxiv_id: str) -> Paper:
    return next(p for p in papers if p.arxiv_id == arxiv_id)


# --- the seeds ---------------------------------------------------------------------------


def test_seeds_dates_and_counts(seeds_archive: Archive) -> None:
    assert seeds_archive.problems == ()
    assert [(d.date.isoformat(), len(d.papers)) for d in seeds_archive.digests] == [
        ("2024-01-02", 8),
        ("2024-02-02", 11),
        ("2024-05-20", 5),
        ("2024-07-31", 10),
    ]


def test_seeds_votes_in_file_order(seeds_archive: Archive) -> None:
    votes = {d.date.isoformat(): [p.votes for p in d.papers] for d in seeds_archive.digests}
    assert votes["2024-05-20"] == [6, 4, 4, 3, 1]
    assert votes["2024-01-02"] == [20, 12, 12, 7, 5, 4, 4, 1]
    assert votes["2024-02-02"][:4] == [42, 31, 11, 11]
    assert votes["2024-07-31"][:3] == [53, 23, 20]


def test_seed_paper_fields(seeds_archive: Archive) -> None:
    indus = _paper(list(seeds_archive.digests[2].papers), "2405.10725")
    assert (
        indus.title == "INDUS: Effective and Efficient Language Models for Scientific Applications"
    )
    assert indus.url == "https://arxiv.org/abs/2405.10725"
    assert indus.hf_url == "https://huggingface.co/papers/2405.10725"
    assert indus.media == Media(
        "image", "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2405.10725.png"
    )
    # "+" stands for hidden authors and is dropped; order is kept.
    assert "+" not in indus.authors
    assert indus.authors[18:20] == ("Yousef El-Kurdi", "Manil Maskey")
    assert len(indus.authors) == 22
    assert len(indus.sections) == 6
    assert all(s.label is None and s.level == 0 for s in indus.sections)
    assert indus.sections[0].text.startswith("일반 영역 코퍼스로 훈련된")


def test_seed_trailing_plus_and_repeated_authors(seeds_archive: Archive) -> None:
    papers = list(seeds_archive.digests[0].papers)
    geo = _paper(papers, "2401.00434")
    assert geo.authors[-1] == "Xinbing Wang"
    embeddings = _paper(papers, "2401.00368")
    assert embeddings.authors == (
        "Liang Wang",
        "Nan Yang",
        "Xiaolong Huang",
        "Linjun Yang",
        "Rangan Majumder",
        "Furu Wei",
    )


def test_seed_video_paper(seeds_archive: Archive) -> None:
    animate = _paper(list(seeds_archive.digests[1].papers), "2402.00769")
    assert animate.media == Media(
        "video",
        "https://cdn-uploads.huggingface.co/production/uploads/60f1abe7544c2adfd699860c/y8gnjxdLaA-k_0uykjiBF.mp4",
    )
    assert animate.votes == 11


def test_seed_labelled_sections(seeds_archive: Archive) -> None:
    meltemi = _paper(list(seeds_archive.digests[3].papers), "2407.20743")
    assert [s.label for s in meltemi.sections] == [
        "What's New",
        "Technical Details",
        "Performance Highlights",
    ]
    assert meltemi.sections[0].text.startswith("최근 발표된 연구는")
    assert not meltemi.sections[0].text.startswith("*")


# --- one fixture per variant -------------------------------------------------------------


def test_repeated_day_sections_merge_without_repeats() -> None:
    papers, problems = _one(VARIANTS / "repeated_sections.md")
    assert problems == []
    assert [p.arxiv_id for p in papers] == ["2406.00001", "2406.00002", "2406.00003"]
    shared = papers[1]
    assert shared.votes == 9  # the later run's higher count
    assert shared.sections[0].text == "두 실행 모두에 나오는 논문입니다."


def test_title_characters_kept_as_text_and_controls_stripped() -> None:
    papers, problems = _one(VARIANTS / "title_chars.md")
    assert problems == []
    assert (
        papers[0].title
        == r"Fast & Furious: <b>Bold</b> [v2] Models with $\mathcal{O}(n)$ Attention"
    )
    assert papers[1].title == "Tabbed Title With Controls"
    assert papers[1].arxiv_id == "2406.00011"  # version suffix dropped
    assert papers[2].title == "Nested [brackets](inside) title"
    assert papers[2].url == "https://arxiv.org/abs/2406.00012"


def test_media_variants() -> None:
    papers, problems = _one(VARIANTS / "media_variants.md")
    media = {p.arxiv_id: p.media for p in papers}
    assert media["2406.00020"] == Media("image", "https://huggingface.co/avatars/x.svg")
    assert media["2406.00021"] == Media(
        "video", "https://cdn-uploads.huggingface.co/production/uploads/a/b.mp4"
    )
    assert media["2406.00022"] == Media(
        "video", "https://cdn-uploads.huggingface.co/production/uploads/a/c.mp4"
    )
    assert media["2406.00023"] == Media(
        "video", "https://cdn-uploads.huggingface.co/production/uploads/a/d.mp4"
    )
    # A javascript: URL is dropped and reported; the paper itself is kept.
    assert media["2406.00024"] is None
    assert len(problems) == 1
    assert problems[0].startswith(f"{VARIANTS / 'media_variants.md'}:38: image URL is not http(s)")


def test_votes_unknown_is_none_never_zero() -> None:
    papers, problems = _one(VARIANTS / "votes.md")
    assert problems == []
    assert [p.votes for p in papers] == [12, None, None, 0]


def test_oldest_format_without_votes_authors_or_images() -> None:
    papers, problems = _one(VARIANTS / "oldest.md")
    assert problems == []
    assert [(p.votes, p.authors, p.media) for p in papers] == [(None, (), None)] * 2
    assert [s.text for s in papers[0].sections] == [
        "초기 다이제스트에는 추천 수, 저자, 이미지가 없습니다.",
        "요약만 있습니다.",
    ]


def test_author_lists() -> None:
    papers, problems = _one(VARIANTS / "authors.md")
    assert problems == []
    assert papers[0].authors == ("Alice Kim", "Bob Lee", "Conan O'Brien")
    assert papers[1].authors == ("A. One", "B. Two", "C. Three")


def test_summary_variants() -> None:
    papers, problems = _one(VARIANTS / "summary_variants.md")
    assert problems == []
    nested, numbered, labelled = papers
    assert [(s.level, s.text) for s in nested.sections] == [
        (0, "최상위 요점입니다."),
        (1, "중첩된 요점입니다."),
        (2, "더 깊이 중첩된 요점입니다."),
        (0, "다시 최상위입니다. 이 줄은 앞 요점의 이어지는 줄입니다."),
    ]
    assert [s.text for s in numbered.sections] == [
        "번호가 있는 첫 요점입니다.",
        "괄호 번호의 두 번째 요점입니다.",
    ]
    assert [(s.label, s.text) for s in labelled.sections] == [
        ("What's New", "두 개의 별표 레이블입니다."),
        ("Technical Details", "세 개의 별표 레이블입니다."),
        ("Performance Highlights", "잘못 닫힌 레이블입니다."),
        ("Limitations", "콜론이 별표 안에 있습니다."),
    ]


def test_bom_is_allowed() -> None:
    papers, problems = _one(VARIANTS / "bom.md")
    assert problems == []
    assert papers[0].title == "BOM File"


def test_crlf_line_endings() -> None:
    data = (VARIANTS / "votes.md").read_bytes().replace(b"\n", b"\r\n")
    digests, problems = parse_bytes(data, "crlf.md")
    assert problems == []
    assert [p.votes for p in digests[0].papers] == [12, None, None, 0]


def test_one_file_with_two_dates_gives_two_digests() -> None:
    text = (VARIANTS / "oldest.md").read_text() + "\n" + (VARIANTS / "votes.md").read_text()
    digests, problems = parse_text(text, "two.md")
    assert problems == []
    assert sorted(d.date for d in digests) == [dt.date(2023, 5, 10), dt.date(2024, 6, 6)]


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "line", "message"),
    [
        ("cp949.md", 5, "not UTF-8"),
        ("empty.md", 0, "empty file"),
        ("no_heading.md", 1, "no '## Daily Papers (YYYY-MM-DD)' heading"),
    ],
)
def test_unreadable_files_raise_digest_error_with_place(name: str, line: int, message: str) -> None:
    with pytest.raises(DigestError) as info:
        parse_file(BAD / name)
    problem = info.value.problem
    assert problem.file == str(BAD / name)
    assert problem.line == line
    assert message in problem.message


def test_bad_title_links_are_reported_and_good_papers_kept() -> None:
    papers, problems = _one(BAD / "bad_title_link.md")
    assert [p.arxiv_id for p in papers] == ["2406.00080", "2406.00081"]
    where = str(BAD / "bad_title_link.md")
    assert [p.split(": ", 1)[0] for p in problems] == [f"{where}:7", f"{where}:11", f"{where}:15"]
    assert "not an arXiv paper" in problems[1]


def test_truncated_file_keeps_complete_papers() -> None:
    papers, problems = _one(BAD / "truncated.md")
    assert papers[0].arxiv_id == "2406.00072"
    assert papers[0].votes == 2
    assert problems == [f"{BAD / 'truncated.md'}:13: file ends mid-line (truncated?)"]


def test_paper_without_summary_is_reported() -> None:
    digests, problems = parse_text(
        "## Daily Papers (2024-06-13)\n\n### [Lonely](https://arxiv.org/abs/2406.00090)\n\nVote: 1\n",
        "x.md",
    )
    assert digests[0].papers[0].votes == 1
    assert [str(p) for p in problems] == ["x.md:3: paper has no summary (truncated file?)"]


def test_invalid_day_heading_skips_its_papers_with_a_problem() -> None:
    text = (
        "## Daily Papers (2024-02-30)\n\n### [A](https://arxiv.org/abs/2402.00001)\n\n- a\n\n"
        "## Daily Papers (2024-03-01)\n\n### [B](https://arxiv.org/abs/2403.00001)\n\n- b\n"
    )
    digests, problems = parse_text(text, "d.md")
    assert [d.date for d in digests] == [dt.date(2024, 3, 1)]
    assert [str(p) for p in problems] == [
        "d.md:1: invalid date '2024-02-30' in day heading",
        "d.md:3: paper under an unreadable day heading; skipped",
    ]


def test_archive_keeps_good_files_beside_bad_ones(tmp_path: Path, seeds_dir: Path) -> None:
    for path in [*seeds_dir.iterdir(), *BAD.iterdir()]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / ".hidden").write_text("not a digest")
    archive = load_archive(tmp_path)
    # The four seeds, plus the good papers of bad_title_link.md and truncated.md.
    assert len(archive.digests) == 6
    assert archive.paper_count == 34 + 2 + 2
    files = sorted({Path(p.file).name for p in archive.problems})
    assert files == ["bad_title_link.md", "cp949.md", "empty.md", "no_heading.md", "truncated.md"]


def test_archive_merges_the_same_day_from_two_files(tmp_path: Path) -> None:
    text = (VARIANTS / "repeated_sections.md").read_text()
    first, second = text.split("\n\n## ", 1)
    (tmp_path / "a.md").write_text(first + "\n")
    (tmp_path / "b.md").write_text("## " + second)
    archive = load_archive(tmp_path)
    assert archive.problems == ()
    (digest,) = archive.digests
    assert [p.arxiv_id for p in digest.papers] == ["2406.00001", "2406.00002", "2406.00003"]
    assert digest.sources == (str(tmp_path / "a.md"), str(tmp_path / "b.md"))


def test_missing_source_folder_is_a_problem(tmp_path: Path) -> None:
    archive = load_archive(tmp_path / "nowhere")
    assert archive.digests == ()
    assert "does not exist" in archive.problems[0].message


# --- fuzzing -------------------------------------------------------------------------------

SEED_BYTES = [p.read_bytes() for p in sorted((Path(__file__).parent.parent / "seeds").iterdir())]
VARIANT_BYTES = [p.read_bytes() for p in sorted(VARIANTS.iterdir())]
TOKENS = [
    b"\n",
    b"## ",
    b"### ",
    b"[",
    b"]",
    b"(",
    b")",
    b"](",
    b"![](",
    b"- ",
    b"  - ",
    b"1. ",
    b"Vote: ",
    b"Vote: -",
    b"Authors: [",
    b"'",
    b'"',
    b"+",
    b"**",
    b"***",
    b":",
    b"\t",
    b"\x00",
    b"\xff",
    b"\xef\xbb\xbf",
    b"<video src='",
    b"[Watch Video]",
    b"https://arxiv.org/abs/",
    b"## Daily Papers (2024-13-45)",
    b"\r",
    "한국어".encode(),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_BYTES + VARIANT_BYTES)))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["cut", "insert", "delete", "flip", "dup"]))
        at = draw(st.integers(0, len(data)))
        if action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 200))]
        elif action == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "dup":
            end = min(len(data), at + draw(st.integers(1, 400)))
            data[at:at] = data[at:end]
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzzed_digests_only_raise_the_parsers_own_error(data: bytes) -> None:
    try:
        digests, problems = parse_bytes(data, "fuzz.md")
    except DigestError as exc:
        assert exc.problem.file == "fuzz.md"
        return
    for digest in digests:
        for paper in digest.papers:
            assert paper.arxiv_id and paper.title
            assert not any(ord(c) < 32 for c in paper.title)
            assert paper.votes is None or isinstance(paper.votes, int)
            if paper.media:
                assert paper.media.url.startswith(("http://", "https://"))
    for problem in problems:
        assert problem.file == "fuzz.md" and problem.line >= 0 and problem.message
