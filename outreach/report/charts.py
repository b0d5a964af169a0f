"""The HTML pages' charts as inline SVG, written directly: horizontal bars (stacked, or with
interval whiskers) and a line with a shaded interval band.

Inline in an HTML page, SVG needs no namespace declarations (the HTML parser supplies them),
so the markup holds no address of any kind, no script and no font file. Text stays text
(searchable, read aloud); each chart's ``<title>`` and ``<desc>`` give it a name and its
figures for assistive technology, and every bar or point has a hover title. Without font
metrics, text widths are estimated generously, only to size the label margin.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

FONT_PX, TITLE_PX = 13, 15
CHAR_PX = 7.6  # wider than the average glyph of a sans-serif font at FONT_PX
PLOT_WIDTH, LINE_PLOT_HEIGHT = 480, 200
ROW_PX, BAR_PX, CAP_PX = 28, 20, 4
TEXT, AXIS, GRID, WHISKER = "#1f2933", "#52606d", "#d9dde1", "#333333"
HEADER_PX, LEGEND_PX = 26, 22  # the title's row, and the legend's row under it


@dataclass(frozen=True)
class Segment:
    value: float
    colour: str
    what: str  # the hover title and the description: "6 met in 2026", "18.6% (…)"


@dataclass(frozen=True)
class Bar:
    label: str
    segments: Sequence[Segment]  # laid end to end from zero
    interval: tuple[float, float] | None = None  # drawn as a whisker


@dataclass(frozen=True)
class Point:
    tick: str  # the x axis label under the point ("5+" for a capped bucket)
    x: float
    y: float
    low: float
    high: float
    what: str


@dataclass(frozen=True)
class Key:
    """One legend entry: a filled box, a pale band, or a line with a marker."""

    label: str
    colour: str
    mark: str = "box"  # "box" | "band" | "line"


def _n(value: float) -> str:
    """A coordinate with at most one decimal: the markup stays small and stable."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _tick(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _ticks(top: float, whole: bool = False, most: int = 7) -> list[float]:
    """Round values from 0 up to ``top``: steps of 1, 2, 2.5 or 5 times a power of ten
    (no 2.5, and no fraction, on an axis that counts people)."""
    raw = max(top, 1e-9) / most
    power = 10 ** math.floor(math.log10(raw))
    factors = (1.0, 2.0, 5.0, 10.0) if whole else (1.0, 2.0, 2.5, 5.0, 10.0)
    step = next(f * power for f in factors if f * power >= raw)
    if whole:
        step = max(1.0, step)
    return [round(i * step, 9) for i in range(int(top / step + 1e-9) + 1)]


def _svg(width: float, height: float, title: str, desc: str) -> ET.Element:
    svg = ET.Element(
        "svg",
        {
            "width": _n(width),
            "height": _n(height),
            "viewBox": f"0 0 {_n(width)} {_n(height)}",
            "role": "img",
            "font-size": str(FONT_PX),
            "fill": TEXT,
        },
    )
    ET.SubElement(svg, "title").text = title
    ET.SubElement(svg, "desc").text = desc
    return svg


def _text(parent: ET.Element, x: float, y: float, text: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, "text", {"x": _n(x), "y": _n(y), **attrs})
    element.text = text
    return element


def _plot_top(keys: Sequence[Key]) -> float:
    return HEADER_PX + (LEGEND_PX if keys else 0) + 6


def _header(svg: ET.Element, left: float, title: str, keys: Sequence[Key]) -> None:
    """The visible title, then the legend on a row of its own (it never covers a bar)."""
    _text(svg, left, TITLE_PX + 4, title, **{"font-size": str(TITLE_PX)})
    x, y = left, HEADER_PX + LEGEND_PX / 2
    for key in keys:
        if key.mark == "line":
            ET.SubElement(
                svg,
                "path",
                {"d": f"M{_n(x)} {_n(y)}h18", "stroke": key.colour, "stroke-width": "2"},
            )
            ET.SubElement(
                svg, "circle", {"cx": _n(x + 9), "cy": _n(y), "r": "3.5", "fill": key.colour}
            )
        else:
            box = {"x": _n(x + 3), "y": _n(y - 6), "width": "12", "height": "12"}
            box["fill"] = key.colour
            if key.mark == "band":
                box["fill-opacity"] = "0.2"
            ET.SubElement(svg, "rect", box)
        _text(svg, x + 24, y, key.label, dy="0.35em")
        x += 24 + len(key.label) * CHAR_PX + 16


def _serialise(svg: ET.Element) -> str:
    return ET.tostring(svg, encoding="unicode")


def bar_chart(
    title: str,
    bars: Sequence[Bar],
    axis_label: str,
    top: float,
    keys: Sequence[Key] = (),
    whole: bool = False,
) -> str:
    """Horizontal bars, one row per :class:`Bar` from the top down, on an axis from 0 to
    ``top``; ``whole`` keeps the axis to whole numbers (counts of people)."""
    left = max([len(b.label) for b in bars] + [1]) * CHAR_PX + 16
    desc = "; ".join(f"{b.label}: {', '.join(s.what for s in b.segments)}" for b in bars)
    plot_top, plot_height = _plot_top(keys), ROW_PX * max(1, len(bars)) + 8
    bottom = plot_top + plot_height
    width, height = left + PLOT_WIDTH + 16, bottom + 44
    svg = _svg(width, height, title, desc)
    _header(svg, left, title, keys)

    def x_of(value: float) -> float:
        return left + min(max(value, 0.0), top) / top * PLOT_WIDTH

    ticks = _ticks(top, whole)
    grid = "".join(f"M{_n(x_of(t))} {_n(plot_top)}V{_n(bottom)}" for t in ticks)
    ET.SubElement(svg, "path", {"d": grid, "stroke": GRID, "fill": "none"})
    for i, bar in enumerate(bars):
        middle = plot_top + 4 + ROW_PX * (i + 0.5)
        _text(svg, left - 8, middle, bar.label, dy="0.35em", **{"text-anchor": "end"})
        start = 0.0
        for segment in bar.segments:
            if segment.value > 0:
                rect = ET.SubElement(
                    svg,
                    "rect",
                    {
                        "x": _n(x_of(start)),
                        "y": _n(middle - BAR_PX / 2),
                        "width": _n(x_of(start + segment.value) - x_of(start)),
                        "height": str(BAR_PX),
                        "fill": segment.colour,
                    },
                )
                ET.SubElement(rect, "title").text = f"{bar.label}: {segment.what}"
            start += segment.value
        if bar.interval is not None:
            low, high = x_of(bar.interval[0]), x_of(bar.interval[1])
            whisker = (
                f"M{_n(low)} {_n(middle)}H{_n(high)}"
                f"M{_n(low)} {_n(middle - CAP_PX)}v{2 * CAP_PX}"
                f"M{_n(high)} {_n(middle - CAP_PX)}v{2 * CAP_PX}"
            )
            ET.SubElement(svg, "path", {"d": whisker, "stroke": WHISKER, "fill": "none"})
    _frame(svg, left, plot_top, plot_height, [(x_of(t), _tick(t)) for t in ticks], axis_label)
    return _serialise(svg)


def _frame(
    svg: ET.Element,
    left: float,
    top: float,
    height: float,
    ticks: Sequence[tuple[float, str]],
    label: str,
) -> None:
    """The plot's border, the x axis's ticks at (x, text) and the axis label under them."""
    box = {"x": _n(left), "y": _n(top), "width": str(PLOT_WIDTH), "height": _n(height)}
    ET.SubElement(svg, "rect", {**box, "fill": "none", "stroke": AXIS})
    bottom = top + height
    marks = "".join(f"M{_n(x)} {_n(bottom)}v4" for x, _ in ticks)
    ET.SubElement(svg, "path", {"d": marks, "stroke": AXIS})
    for x, text in ticks:
        _text(svg, x, bottom + 18, text, **{"text-anchor": "middle"})
    _text(svg, left + PLOT_WIDTH / 2, bottom + 37, label, **{"text-anchor": "middle"})


def line_chart(
    title: str,
    points: Sequence[Point],
    x_label: str,
    y_label: str,
    colour: str,
    keys: Sequence[Key],
) -> str:
    """A line through ``points`` over a shaded band from each point's low to its high."""
    left = 64.0
    desc = f"{y_label} by {x_label}: " + "; ".join(f"{p.tick}: {p.what}" for p in points)
    plot_top = _plot_top(keys)
    bottom = plot_top + LINE_PLOT_HEIGHT
    width, height = left + PLOT_WIDTH + 16, bottom + 44
    svg = _svg(width, height, title, desc)
    _header(svg, left, title, keys)

    xs = [p.x for p in points] or [0.0]
    low_x = min(xs)
    span = max(max(xs) - low_x, 1.0)
    margin = span * 0.05
    highest = max([p.high for p in points] + [1.0])
    y_ticks = _ticks(highest)
    if y_ticks[-1] < highest:  # the axis ends on a tick above the highest band
        y_ticks.append(2 * y_ticks[-1] - y_ticks[-2])
    y_top = y_ticks[-1]

    def x_of(x: float) -> float:
        return left + (x - low_x + margin) / (span + 2 * margin) * PLOT_WIDTH

    def y_of(y: float) -> float:
        return bottom - max(y, 0.0) / y_top * LINE_PLOT_HEIGHT

    grid = "".join(f"M{_n(x_of(p.x))} {_n(plot_top)}V{_n(bottom)}" for p in points)
    grid += "".join(f"M{_n(left)} {_n(y_of(t))}h{PLOT_WIDTH}" for t in y_ticks)
    ET.SubElement(svg, "path", {"d": grid, "stroke": GRID, "fill": "none"})
    if points:
        edge = [(x_of(p.x), y_of(p.high)) for p in points]
        edge += [(x_of(p.x), y_of(p.low)) for p in reversed(points)]
        band = "M" + "L".join(f"{_n(x)} {_n(y)}" for x, y in edge) + "Z"
        ET.SubElement(svg, "path", {"d": band, "fill": colour, "fill-opacity": "0.2"})
        line = "M" + "L".join(f"{_n(x_of(p.x))} {_n(y_of(p.y))}" for p in points)
        attrs = {"d": line, "stroke": colour, "stroke-width": "2", "fill": "none"}
        ET.SubElement(svg, "path", attrs)
        for p in points:
            dot = ET.SubElement(
                svg,
                "circle",
                {"cx": _n(x_of(p.x)), "cy": _n(y_of(p.y)), "r": "3.5", "fill": colour},
            )
            ET.SubElement(dot, "title").text = f"{p.tick}: {p.what}"
    x_ticks = [(x_of(p.x), p.tick) for p in points]
    _frame(svg, left, plot_top, LINE_PLOT_HEIGHT, x_ticks, x_label)
    marks = "".join(f"M{_n(left)} {_n(y_of(t))}h-4" for t in y_ticks)
    ET.SubElement(svg, "path", {"d": marks, "stroke": AXIS})
    for t in y_ticks:
        _text(svg, left - 8, y_of(t), _tick(t), dy="0.35em", **{"text-anchor": "end"})
    middle = plot_top + LINE_PLOT_HEIGHT / 2
    _text(
        svg,
        16,
        middle,
        y_label,
        transform=f"rotate(-90 16 {_n(middle)})",
        dy="0.35em",
        **{"text-anchor": "middle"},
    )
    return _serialise(svg)
