"""The console's charts: SVG that parses, names and describes itself, escapes whatever text
it is given, draws bars to scale, writes numbers and dates for its locale, tells its
series apart without colour and fits a phone's screen."""

from __future__ import annotations

import datetime as dt
import itertools
import re

import lxml.etree
import lxml.html
import pytest

from newsletter.publish.charts import (
    WIDTH,
    ChartError,
    bar_chart,
    line_chart,
    nice_ticks,
    text_width,
)

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [dt.date(2024, 5, 20) - dt.timedelta(days=89 - i) for i in range(90)]
WEEKS = [f"2024-W{w:02d}" for w in range(1, 27)]
HOSTILE = '</svg><script>alert("x")</script> & "quoted" \x00\x1b\ud800 <b>'


def parse(markup: str) -> lxml.etree._Element:
    return lxml.etree.fromstring(str(markup).encode("utf-8"))


def texts(root: lxml.etree._Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def _bars() -> str:
    return bar_chart(
        WEEKS[:4],
        [("Sent", [900, 450, 0, 1200]), ("Failed", [100, 50, 0, 300])],
        title="Deliveries",
        description="Messages per issue",
    )


def _lines() -> str:
    return line_chart(
        {"Active": [(d, 1000 + i) for i, d in enumerate(DAYS)], "Left": [(DAYS[0], 5)]},
        title="Subscribers",
        description="Over 90 days",
    )


@pytest.mark.parametrize("chart", [_bars, _lines], ids=["bars", "lines"])
def test_an_image_with_a_name_and_a_description(chart: object) -> None:
    root = parse(chart())  # type: ignore[operator]
    assert root.tag == f"{SVG}svg"
    assert (root.get("role"), root.get("width")) == ("img", "100%")
    assert root.get("viewBox", "").startswith(f"0 0 {WIDTH} ")
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    assert (title.text, desc.text) in {
        ("Deliveries", "Messages per issue"),
        ("Subscribers", "Over 90 days"),
    }
    assert not list(root.iter(f"{SVG}script")) and "style=" not in str(chart())  # type: ignore[operator]


def test_hostile_text_is_only_text() -> None:
    charts = [
        bar_chart(
            [HOSTILE, "b"],
            [(HOSTILE, [1, 2]), ("ok", [3, 4])],
            title=HOSTILE,
            description=HOSTILE,
            x_label=HOSTILE,
            y_label=HOSTILE,
            id=HOSTILE,
        ),
        line_chart(
            {HOSTILE: [(1, 2), (2, 3)], "other": [(1, 1)]},
            title=HOSTILE,
            description=HOSTILE,
            x_label=HOSTILE,
            y_label=HOSTILE,
            empty=HOSTILE,
        ),
    ]
    for chart in charts:
        root = parse(chart)  # parses: no character XML forbids got through
        assert not list(root.iter(f"{SVG}script"))
        assert root.find(f"{SVG}title").text.startswith('</svg><script>alert("x")</script> &')  # type: ignore[union-attr]
        assert any(t.startswith("</svg><script>") for t in texts(root))
        page = lxml.html.fromstring(f"<html><body><p>before</p>{chart}<p>after</p></body></html>")
        assert not page.xpath("//script") and page.xpath("//p/text()") == ["before", "after"]
        assert re.fullmatch(r"[A-Za-z0-9_-]+", root.get("id", ""))


def _rects(root: lxml.etree._Element) -> list[lxml.etree._Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.get("data-value") is not None]


@pytest.mark.parametrize("stacked", [True, False])
def test_bar_heights_are_proportional_to_values(stacked: bool) -> None:
    values = {"Sent": [900, 450, 0, 1200, 37], "Failed": [100, 50, 0, 300, 3]}
    root = parse(
        bar_chart(
            WEEKS[:5],
            list(values.items()),
            title="t",
            description="d",
            stacked=stacked,
        )
    )
    rects = _rects(root)
    assert len(rects) == 10
    scales = set()
    for rect in rects:
        value, height = float(rect.get("data-value", "")), float(rect.get("height", ""))
        series, group = int(rect.get("data-series", "")), int(rect.get("data-group", ""))
        assert value == list(values.values())[series][group]
        if value:
            scales.add(round(height / value, 3))
        else:
            assert height == 0
    assert len(scales) == 1
    if stacked:  # each issue's segments sit on each other, from one baseline
        by_group = {}
        for rect in rects:
            by_group.setdefault(rect.get("data-group"), []).append(rect)
        for sent, failed in by_group.values():
            assert float(failed.get("y", "")) + float(failed.get("height", "")) == pytest.approx(
                float(sent.get("y", "")), abs=0.01
            )


def test_bar_series_differ_without_colour() -> None:
    series = [(f"Series {i}", [i + 1, 2]) for i in range(6)]
    root = parse(bar_chart(["a", "b"], series, title="t", description="d"))
    patterns = {p.get("id"): p for p in root.iter(f"{SVG}pattern")}
    assert len(patterns) == 6

    def shape(pattern: lxml.etree._Element) -> str:
        # The pattern's marks with every colour taken out: what is left must differ.
        marks = [
            lxml.etree.tostring(child).decode() for child in pattern if child.get("width") != "6"
        ]
        return re.sub(r'(fill|stroke)="#[0-9A-Fa-f]+"', "", "".join(marks))

    assert len({shape(p) for p in patterns.values()}) == 6
    fills = {r.get("data-series"): r.get("fill") for r in _rects(root)}
    assert sorted(fills.values()) == sorted(f"url(#{pid})" for pid in patterns)
    for entry in root.iter(f"{SVG}g"):
        if entry.get("class") != "legend":
            continue
        swatch = entry.find(f"{SVG}rect")
        label = entry.find(f"{SVG}text")
        assert swatch is not None and label is not None
        assert swatch.get("fill") == fills[entry.get("data-series")]
        assert label.text == series[int(entry.get("data-series", ""))][0]


def test_line_series_differ_without_colour() -> None:
    lines = {f"Line {i}": [(d, 100 * i + n) for n, d in enumerate(DAYS[:10])] for i in range(6)}
    root = parse(line_chart(lines, title="t", description="d"))
    drawn = [g for g in root.iter(f"{SVG}g") if g.get("class") == "line"]
    legend = [g for g in root.iter(f"{SVG}g") if g.get("class") == "legend"]
    assert len(drawn) == len(legend) == 6

    def look(group: lxml.etree._Element) -> tuple[str, str]:
        """A line's dash, and its marker's shape (its element, its path without numbers)."""
        (dash,) = [
            e.get("stroke-dasharray") for e in group if e.get("stroke-dasharray") is not None
        ]
        mark = next(e for e in group if e.get("stroke-dasharray") is None and e.tag != f"{SVG}text")
        return dash or "", mark.tag + re.sub(r"[\d.\-]+", "", mark.get("d", ""))

    looks = [look(g) for g in drawn]
    assert len(set(looks)) == 6
    # The legend shows each line's own dash and mark beside its name.
    assert [look(g) for g in legend] == looks
    assert [g.find(f"{SVG}text").text for g in legend] == list(lines)  # type: ignore[union-attr]


def test_ticks_are_written_for_the_locale() -> None:
    points = [(d, 90_000 + n * 100) for n, d in enumerate(DAYS)]
    korean = texts(parse(line_chart(points, title="t", description="d", locale="ko_KR")))
    english = texts(parse(line_chart(points, title="t", description="d", locale="en_US")))
    assert "5월 20일" in korean and "10만" in korean and "0" in korean
    assert "May 20" in english and "100K" in english
    small = texts(parse(bar_chart(["a"], [("s", [4_000])], title="t", description="d")))
    assert "1,000" in small and "4,000" in small
    long = [(dt.date(2022, 1, 1) + dt.timedelta(days=30 * i), i) for i in range(30)]
    assert "2022년 1월" in texts(parse(line_chart(long, title="t", description="d", locale="ko")))
    with pytest.raises(ChartError, match="chart: unknown locale 'xx_YY'"):
        line_chart(points, title="t", description="d", locale="xx_YY")


def test_labels_fit_a_phone_and_never_overlap() -> None:
    for chart in (
        bar_chart(
            WEEKS, [("발송", list(range(26))), ("실패", [1] * 26)], title="t", description="d"
        ),
        line_chart(
            [(d, n) for n, d in enumerate(DAYS)], title="t", description="d", locale="ko_KR"
        ),
    ):
        root = parse(chart)
        below = [
            t
            for t in root.iter(f"{SVG}text")
            if t.get("text-anchor") == "middle" and t.getparent().get("class") == "x-axis"
        ]
        spans = sorted(
            (
                float(t.get("x", "")) - text_width(t.text or "") / 2,
                float(t.get("x", "")) + text_width(t.text or "") / 2,
            )
            for t in below
        )
        assert len(spans) >= 3
        assert all(left >= 0 and right <= WIDTH for left, right in spans)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_nothing_to_draw_is_still_a_chart() -> None:
    empty_bars = parse(bar_chart([], [], title="t", description="d", empty="No issues yet"))
    assert "No issues yet" in texts(empty_bars) and not _rects(empty_bars)
    empty_line = parse(line_chart([], title="t", description="d", empty="Nothing yet"))
    assert "Nothing yet" in texts(empty_line)
    # Values that are not numbers are left out; a negative bar counts as none.
    odd = parse(
        bar_chart(
            ["a", "b", "c"],
            [("s", [float("nan"), -5, None, 4])],  # type: ignore[list-item]
            title="t",
            description="d",
        )
    )
    assert [r.get("data-value") for r in _rects(odd)] == ["0", "0", "0"]
    one = parse(line_chart([(1, float("inf")), (2, 3)], title="t", description="d"))
    assert len([p for p in one.iter(f"{SVG}polyline")]) == 1


def test_nice_ticks() -> None:
    assert nice_ticks(0, 9_000) == [0, 2_500, 5_000, 7_500, 10_000]
    assert nice_ticks(0, 3, integers=True) == [0, 1, 2, 3]
    assert nice_ticks(0, 0) == [0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(88_000, 90_300)[0] <= 88_000 and nice_ticks(88_000, 90_300)[-1] >= 90_300
