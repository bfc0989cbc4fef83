"""Charts as inline SVG for the editor's console: a line over time, bars per issue.

Pure functions of their data, returning :class:`Markup` to put straight into a page: no
script, no external file. Each chart is an image with a name (``<title>``) and a
description (``<desc>``) for screen readers; its text is escaped and stripped of what XML
cannot hold. It scales to its container (``width="100%"`` and a viewBox sized for a
375 px phone, where its 12-unit text stays about 12 px), draws its axes and text in
``currentColor`` (dark themes included), and tells series apart without colour: each bar
series has its own fill pattern and each line its own dash and marker, shown again in
the legend beside the series' name. Numbers and dates are written for ``locale``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from babel import Locale, UnknownLocaleError
from babel.dates import format_skeleton
from babel.numbers import format_compact_decimal, format_decimal
from markupsafe import Markup, escape

from newsletter.errors import NewsletterError

log = logging.getLogger(__name__)

WIDTH = 360
FONT = 12
PLOT_HEIGHT = 150
# Okabe and Ito's palette, told apart by most colour-blind readers too; the patterns and
# dashes are what tells the series apart without any colour.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000")
DASHES = ("", "7 4", "2 3", "9 3 2 3", "14 4", "1 5", "5 2 1 2 1 2")
MARKERS = ("circle", "square", "triangle", "diamond", "cross", "bar", "none")
# The marks each bar series' pattern lays over its colour, on a 6-unit tile.
PATTERNS = (
    "",
    '<path d="M-1 1l2-2M0 6l6-6M5 7l2-2" stroke="#fff" stroke-width="1.6"/>',
    '<circle cx="3" cy="3" r="1.4" fill="#fff"/>',
    '<path d="M0 3h6" stroke="#fff" stroke-width="1.6"/>',
    '<path d="M-1 1l2-2M0 6l6-6M5 7l2-2M-1 5l2 2M0 0l6 6M5 -1l2 2" stroke="#fff"/>',
    '<path d="M3 0v6" stroke="#fff" stroke-width="1.6"/>',
    '<path d="M-1 5l2 2M0 0l6 6M5 -1l2 2" stroke="#fff" stroke-width="1.6"/>',
)

Number = int | float
X = dt.date | dt.datetime | int | float


class ChartError(NewsletterError):
    """A chart asked for with data or settings it cannot be drawn from."""


# --- text ---------------------------------------------------------------------------------

# What XML 1.0 cannot hold at all (most control characters, lone surrogates, U+FFFE/F).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _e(text: object) -> str:
    """``text`` escaped for SVG text and attributes, without characters XML forbids."""
    return str(escape(_NOT_XML.sub("", str(text))))


def text_width(text: str, size: float = FONT) -> float:
    """About how wide ``text`` is drawn: Hangul and other wide letters a full em, the
    rest about 0.6 em."""
    return sum(size if unicodedata.east_asian_width(c) in "WF" else 0.6 * size for c in text)


def _locale(name: str) -> Locale:
    try:
        return Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise ChartError(f"chart: unknown locale {name!r}") from None


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_number(value: float, locale: Locale, *, compact: bool | None = None) -> str:
    """A number as written in ``locale``: 2,500; compact (1.2만, 12K) when ``compact``,
    or when None from 10,000 on."""
    if compact if compact is not None else abs(value) >= 10_000:
        return str(format_compact_decimal(value, locale=locale, fraction_digits=1))
    return str(format_decimal(round(value, 6), locale=locale))


# --- scales -------------------------------------------------------------------------------


def nice_ticks(low: float, high: float, *, integers: bool = False, most: int = 5) -> list[float]:
    """Round values from at most ``low`` to at least ``high``, about ``most`` of them, a
    step of 1, 2, 2.5 or 5 times a power of ten (whole numbers when ``integers``)."""
    if not high > low:
        high = low + 1
    raw = (high - low) / max(most - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(power * f for f in (1, 2, 2.5, 5, 10) if power * f >= raw)
    if integers:
        step = max(1.0, float(math.ceil(step)))
    first = math.floor(low / step) * step
    count = math.ceil((high - first) / step - 1e-9)
    return [first + i * step for i in range(count + 1)]


@dataclass(frozen=True)
class _Frame:
    """Where the plot is drawn (its top left corner and size) and the values it spans."""

    left: float
    top: float
    width: float
    height: float
    low: float
    high: float

    def y(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return self.top + self.height * (1 - (value - self.low) / span)

    @property
    def bottom(self) -> float:
        return self.top + self.height


# --- parts --------------------------------------------------------------------------------


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    """A point's mark, a shape per series (none for the seventh)."""
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'
    if shape == "square":
        return f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="{colour}"/>'
    if shape == "triangle":
        return f'<path d="M{x:.1f} {y - 3.5:.1f}l3.5 6.5h-7z" fill="{colour}"/>'
    if shape == "diamond":
        return f'<path d="M{x:.1f} {y - 4:.1f}l4 4-4 4-4-4z" fill="{colour}"/>'
    if shape == "cross":
        return (
            f'<path d="M{x - 3:.1f} {y - 3:.1f}l6 6m0-6l-6 6" stroke="{colour}" stroke-width="2"/>'
        )
    if shape == "bar":
        return f'<path d="M{x:.1f} {y - 4:.1f}v8" stroke="{colour}" stroke-width="2.5"/>'
    return ""


def _pattern_defs(prefix: str, count: int) -> str:
    tiles = []
    for i in range(count):
        colour = PALETTE[i % len(PALETTE)]
        tiles.append(
            f'<pattern id="{prefix}-p{i}" data-series="{i}" width="6" height="6" '
            f'patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="{colour}"/>'
            f"{PATTERNS[i % len(PATTERNS)]}</pattern>"
        )
    return "<defs>" + "".join(tiles) + "</defs>"


def _legend(labels: Sequence[str], swatch: str, prefix: str, top: float) -> tuple[str, float]:
    """Series names beside their swatch (``bar`` or ``line``), in rows as wide as the
    chart; returns the SVG and the height taken."""
    parts, x, y = [], 0.0, top + FONT
    for i, label in enumerate(labels):
        width = 22 + text_width(label) + 12
        if x and x + width > WIDTH:
            x, y = 0.0, y + FONT + 6
        if swatch == "bar":
            mark = (
                f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="16" height="11" '
                f'fill="url(#{prefix}-p{i})" stroke="currentColor" stroke-width="0.5"/>'
            )
        else:
            colour = PALETTE[i % len(PALETTE)]
            mark = (
                f'<path d="M{x:.1f} {y - 4:.1f}h18" stroke="{colour}" stroke-width="2" '
                f'fill="none" stroke-dasharray="{DASHES[i % len(DASHES)]}"/>'
                + _marker(MARKERS[i % len(MARKERS)], x + 9, y - 4, colour)
            )
        parts.append(
            f'<g class="legend" data-series="{i}">{mark}'
            f'<text x="{x + 22:.1f}" y="{y:.1f}">{_e(label)}</text></g>'
        )
        x += width
    return "".join(parts), (y - top + 6) if labels else 0.0


def _tick_text(ticks: Sequence[float], locale: Locale) -> list[str]:
    """The y axis's numbers, all compact or none (10K beside 7,500 reads as a mistake)."""
    compact = max((abs(t) for t in ticks), default=0.0) >= 10_000
    return [format_number(t, locale, compact=compact) for t in ticks]


def _y_axis(frame: _Frame, ticks: Sequence[float], locale: Locale) -> str:
    parts = []
    for value, text in zip(ticks, _tick_text(ticks, locale), strict=True):
        y = frame.y(value)
        parts.append(
            f'<path d="M{frame.left:.1f} {y:.1f}h{frame.width:.1f}" stroke="currentColor" '
            'stroke-opacity="0.2"/>'
            f'<text x="{frame.left - 4:.1f}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_e(text)}</text>"
        )
    return '<g class="y-axis">' + "".join(parts) + "</g>"


def _x_ticks(positions: Sequence[tuple[float, str]], frame: _Frame) -> str:
    parts = [
        f'<path d="M{frame.left:.1f} {frame.bottom:.1f}h{frame.width:.1f}" stroke="currentColor"/>'
    ]
    kept: list[tuple[float, str]] = []
    edge = float(WIDTH)
    # From the last, which is kept whole inside the chart: a label that would overlap the
    # one after it is left out.
    for x, label in reversed(positions):
        half = text_width(label) / 2
        x = min(max(x, half), WIDTH - half)
        if x + half <= edge:
            kept.append((x, label))
            edge = x - half - 4
    for x, label in reversed(kept):
        parts.append(
            f'<text x="{x:.1f}" y="{frame.bottom + FONT + 4:.1f}" text-anchor="middle">'
            f"{_e(label)}</text>"
        )
    return '<g class="x-axis">' + "".join(parts) + "</g>"


def _chart_id(given: str | None, *parts: object) -> str:
    if given:
        return re.sub(r"[^A-Za-z0-9_-]", "-", given)[:60] or "chart"
    return "chart-" + hashlib.sha1(repr(parts).encode("utf-8", "replace")).hexdigest()[:10]


def _svg(prefix: str, title: str, description: str, height: float, body: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{prefix}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" width="100%" role="img" '
        f'aria-labelledby="{prefix}-title {prefix}-desc" font-size="{FONT}" '
        'fill="currentColor">'
        f'<title id="{prefix}-title">{_e(title)}</title>'
        f'<desc id="{prefix}-desc">{_e(description)}</desc>{body}</svg>'
    )


def _layout(
    legend: str, legend_height: float, y_label: str, ticks: Sequence[float], locale: Locale
) -> tuple[float, float]:
    """Where the plot starts: left of it the widest tick, above it the legend and the
    y axis's name."""
    widest = max((text_width(t) for t in _tick_text(ticks, locale)), default=FONT)
    top = legend_height + (FONT + 8 if y_label else 6) + (6 if legend else 0)
    return max(28.0, widest + 8), top


def _labels_below(x_label: str, frame: _Frame) -> tuple[str, float]:
    """The x axis's name under its ticks, and the chart's whole height."""
    y = frame.bottom + 2 * FONT + 10
    if not x_label:
        return "", frame.bottom + FONT + 10
    text = f'<text x="{frame.left + frame.width / 2:.1f}" y="{y:.1f}" text-anchor="middle">'
    return text + f"{_e(x_label)}</text>", y + 6


def _y_title(y_label: str, top: float) -> str:
    if not y_label:
        return ""
    return f'<text class="y-label" x="0" y="{top - 8:.1f}">{_e(y_label)}</text>'


def _empty_note(text: str, frame: _Frame) -> str:
    if not text:
        return ""
    x, y = frame.left + frame.width / 2, frame.top + frame.height / 2
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle">{_e(text)}</text>'


# --- bars ---------------------------------------------------------------------------------


def _bar_values(
    groups: Sequence[str], series: Sequence[tuple[str, Sequence[object]]]
) -> list[list[float]]:
    """Each series' values, one per group: missing, negative or not a number counts 0."""
    table = []
    for label, values in series:
        row = [_finite(v) for v in list(values)[: len(groups)]]
        if len(row) < len(groups):
            log.debug("chart: series %r has %d values for %d groups", label, len(row), len(groups))
        row += [None] * (len(groups) - len(row))
        table.append([max(v, 0.0) if v is not None else 0.0 for v in row])
    return table


def _thin(count: int, band: float, labels: Sequence[str]) -> int:
    """Label every how many bands, so that no two labels overlap."""
    widest = max((text_width(label) for label in labels), default=0.0)
    return max(1, math.ceil((widest + 6) / band)) if band > 0 else count


def _bars(
    table: list[list[float]],
    groups: Sequence[str],
    series_labels: Sequence[str],
    frame: _Frame,
    prefix: str,
    stacked: bool,
    locale: Locale,
) -> str:
    band = frame.width / max(len(groups), 1)
    parts = []
    for g, group in enumerate(groups):
        base = frame.low
        for s, row in enumerate(table):
            value = row[g]
            if stacked:
                width, x = band * 0.7, frame.left + g * band + band * 0.15
                low, high = base, base + value
                base = high
            else:
                width = band * 0.8 / len(table)
                x = frame.left + g * band + band * 0.1 + s * width
                low, high = frame.low, value
            y, bottom = frame.y(high), frame.y(low)
            tip = f"{group} {series_labels[s]}: {format_number(value, locale)}"
            parts.append(
                f'<rect x="{x:.2f}" y="{y:.3f}" width="{width:.2f}" height="{bottom - y:.3f}" '
                f'fill="url(#{prefix}-p{s})" stroke="#fff" stroke-width="0.5" '
                f'data-series="{s}" data-group="{g}" data-value="{value:g}">'
                f"<title>{_e(tip)}</title></rect>"
            )
    return '<g class="bars">' + "".join(parts) + "</g>"


def bar_chart(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[Number]]],
    *,
    title: str,
    description: str,
    x_label: str = "",
    y_label: str = "",
    locale: str = "en_US",
    stacked: bool = True,
    empty: str = "",
    id: str | None = None,
) -> Markup:
    """Bars for each of ``groups`` (an issue's week, say), one per ``series`` (label,
    values in the order of ``groups``): stacked on each other, or side by side when not
    ``stacked``. ``empty`` is written in the plot when there is nothing to draw; ``id``
    names the chart and prefixes its patterns' ids (a hash of its data by default)."""
    where = _locale(locale)
    labels = [str(label) for label, _ in series]
    table = _bar_values(groups, series)
    tops = [sum(col) for col in zip(*table, strict=True)] if stacked else []
    highest = max(tops or [max(row, default=0.0) for row in table] or [0.0])
    integers = all(float(v).is_integer() for row in table for v in row)
    ticks = nice_ticks(0.0, max(highest, 0.0), integers=integers)
    prefix = _chart_id(id, title, list(groups), table)
    legend, legend_height = _legend(labels, "bar", prefix, 0.0) if len(labels) > 1 else ("", 0)
    left, top = _layout(legend, legend_height, y_label, ticks, where)
    frame = _Frame(left, top, WIDTH - left - 4, PLOT_HEIGHT, ticks[0], ticks[-1])
    band = frame.width / max(len(groups), 1)
    every = _thin(len(groups), band, groups)
    last = len(groups) - 1
    positions = [
        (frame.left + (i + 0.5) * band, str(g))
        for i, g in enumerate(groups)
        if (last - i) % every == 0
    ]
    below, height = _labels_below(x_label, frame)
    nothing = not groups or not table or highest <= 0
    body = "".join(
        (
            _pattern_defs(prefix, len(labels)),
            legend,
            _y_title(y_label, top),
            _y_axis(frame, ticks[:1] if nothing else ticks, where),
            _bars(table, groups, labels, frame, prefix, stacked, where) if table else "",
            _empty_note(empty, frame) if nothing else "",
            _x_ticks(positions, frame),
            below,
        )
    )
    return _svg(prefix, title, description, height, body)


# --- lines --------------------------------------------------------------------------------


def _x_number(x: object) -> float | None:
    """A point's place along the x axis: seconds for a date or a time, else its number."""
    if isinstance(x, dt.datetime):
        return (x if x.tzinfo else x.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(x, dt.date):
        return dt.datetime.combine(x, dt.time(), tzinfo=dt.UTC).timestamp()
    return _finite(x)


def _x_text(x: object, span_days: float, locale: Locale) -> str:
    if isinstance(x, dt.datetime) and span_days <= 2:
        return str(format_skeleton("Hm", x, locale=locale))
    if isinstance(x, dt.date):
        day = x.date() if isinstance(x, dt.datetime) else x
        return str(format_skeleton("yMMM" if span_days > 370 else "MMMd", day, locale=locale))
    number = _finite(x)
    return "" if number is None else format_number(number, locale)


def _lines_of(
    points: Sequence[tuple[X, Number]] | Mapping[str, Sequence[tuple[X, Number]]], label: str
) -> list[tuple[str, list[tuple[float, float, object]]]]:
    """Each line's label and its drawable points (x as a number, y, x as given), in x
    order; points whose x or y is not a number are left out."""
    named = points.items() if isinstance(points, Mapping) else [(label, points)]
    lines: list[tuple[str, list[tuple[float, float, object]]]] = []
    for name, found in named:
        kept: list[tuple[float, float, object]] = []
        for x, y in found:
            at, value = _x_number(x), _finite(y)
            if at is not None and value is not None:
                kept.append((at, value, x))
        lines.append((str(name), sorted(kept, key=lambda p: p[0])))
    return lines


def _x_positions(
    lines: list[tuple[str, list[tuple[float, float, object]]]], frame: _Frame, locale: Locale
) -> tuple[float, float, list[tuple[float, str]]]:
    """The x values' range, and the ticks to label: as many as fit, evenly spread over
    the distinct x values, first and last included, no label twice in a row."""
    by_x: dict[float, tuple[float, float, object]] = {}
    for _, line in lines:
        for point in line:
            by_x.setdefault(point[0], point)
    distinct = [by_x[x] for x in sorted(by_x)]
    if not distinct:
        return 0.0, 1.0, []
    low, high = distinct[0][0], distinct[-1][0]
    span_days = (high - low) / 86400
    texts = [_x_text(p[2], span_days, locale) for p in distinct]
    widest = max((text_width(t) for t in texts), default=FONT)
    most = max(1, min(len(distinct), int(frame.width // (widest + 10))))
    picks = sorted({round(i * (len(distinct) - 1) / max(most - 1, 1)) for i in range(most)})
    scale = _x_scale(low, high, frame)
    ticks: list[tuple[float, str]] = []
    for i in picks:
        if not ticks or ticks[-1][1] != texts[i]:
            ticks.append((scale(distinct[i][0]), texts[i]))
    return low, high, ticks


def _x_scale(low: float, high: float, frame: _Frame) -> Callable[[float], float]:
    pad = 8.0
    if high <= low:
        return lambda _x: frame.left + frame.width / 2
    return lambda x: frame.left + pad + (frame.width - 2 * pad) * (x - low) / (high - low)


def _polylines(
    lines: list[tuple[str, list[tuple[float, float, object]]]],
    frame: _Frame,
    low: float,
    high: float,
) -> str:
    scale = _x_scale(low, high, frame)
    parts = []
    for i, (_name, line) in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        spots = [(scale(x), frame.y(y)) for x, y, _ in line]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in spots)
        marked = spots if len(spots) <= 31 else spots[-1:]
        parts.append(
            f'<g class="line" data-series="{i}"><polyline points="{coords}" fill="none" '
            f'stroke="{colour}" stroke-width="2" stroke-linejoin="round" '
            f'stroke-dasharray="{DASHES[i % len(DASHES)]}"/>'
            + "".join(_marker(MARKERS[i % len(MARKERS)], x, y, colour) for x, y in marked)
            + "</g>"
        )
    return "".join(parts)


def line_chart(
    points: Sequence[tuple[X, Number]] | Mapping[str, Sequence[tuple[X, Number]]],
    *,
    title: str,
    description: str,
    x_label: str = "",
    y_label: str = "",
    locale: str = "en_US",
    label: str = "",
    zero: bool = True,
    empty: str = "",
    id: str | None = None,
) -> Markup:
    """A line through ``points`` (x, y), x a date, a time or a number; or one line per
    entry of a mapping of label to points. ``label`` names a single line in a legend
    (none when empty); the y axis starts at 0 unless ``zero`` is false. ``empty`` is
    written in the plot when there is nothing to draw; ``id`` as for :func:`bar_chart`."""
    where = _locale(locale)
    lines = _lines_of(points, label)
    values = [y for _, line in lines for _, y, _x in line]
    low = min(values, default=0.0)
    high = max(values, default=0.0)
    ticks = nice_ticks(
        min(low, 0.0) if zero else low, high, integers=all(v.is_integer() for v in values)
    )
    prefix = _chart_id(id, title, [(n, [(a, b) for a, b, _ in line]) for n, line in lines])
    names = [name for name, _ in lines]
    shown = len(lines) > 1 or bool(label)
    legend, legend_height = _legend(names, "line", prefix, 0.0) if shown else ("", 0.0)
    left, top = _layout(legend, legend_height, y_label, ticks, where)
    frame = _Frame(left, top, WIDTH - left - 4, PLOT_HEIGHT, ticks[0], ticks[-1])
    first, last, positions = _x_positions(lines, frame, where)
    below, height = _labels_below(x_label, frame)
    body = "".join(
        (
            legend,
            _y_title(y_label, top),
            _y_axis(frame, ticks if values else ticks[:1], where),
            _polylines(lines, frame, first, last),
            "" if values else _empty_note(empty, frame),
            _x_ticks(positions, frame),
            below,
        )
    )
    return _svg(prefix, title, description, height, body)
