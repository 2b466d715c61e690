"""Line charts as inline SVG, drawn on the server: no script, no library, no network."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

#: one colour per version, in order; distinguishable for the common colour-vision deficiencies
PALETTE = ("#2457c5", "#d1600f", "#17803d", "#8a3ffc", "#b3261e", "#0f7b8a", "#6b6b00")
WIDTH, HEIGHT = 480, 200
LEFT, RIGHT, TOP, BOTTOM = 64, 10, 12, 26


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value:.3g}"


def line_chart(
    title: str,
    unit: str,
    series: Sequence[tuple[str, Sequence[float | None]]],
    span: str | None = None,
) -> Markup:
    """One line per ``(label, values)``, values oldest first, one per minute (or step) ending
    now; ``None`` (no calls then, so no latency) leaves a gap in the line. ``span`` labels the
    left end (default: ``-N min``)."""
    points = max((len(values) for _, values in series), default=0)
    top = nice_ceiling(max((v for _, vs in series for v in vs if v is not None), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(index: int) -> float:
        return LEFT + (plot_w * index / (points - 1) if points > 1 else plot_w / 2)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        level = top * fraction
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(level):.1f}" '
            f'y2="{y(level):.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y(level) + 4:.1f}" text-anchor="end">'
            f"{escape(_number(level))}{escape(unit)}</text>"
        )
    parts.append(
        f'<text class="axis" x="{LEFT}" y="{HEIGHT - 6}">'
        f"{escape(span) if span else f'-{points} min'}</text>"
        f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">now</text>'
    )
    for index, (label, values) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(value):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(
                    f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}">'
                    f"<title>{escape(label)}</title></circle>"
                )
            elif run:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                    f'points="{" ".join(run)}"><title>{escape(label)}</title></polyline>'
                )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built here from numbers and escaped text


def legend(labels: Sequence[str]) -> list[tuple[str, str]]:
    """``(label, colour)`` pairs in the charts' order."""
    return [(label, PALETTE[i % len(PALETTE)]) for i, label in enumerate(labels)]


def histogram(title: str, bins: Sequence[tuple[str, float, float]]) -> Markup:
    """Two bars per bin, side by side: ``(bin label, reference share, captured share)``, shares
    from 0 to 1, drawn in the first two colours of the palette."""
    top = nice_ceiling(max((max(r, c) for _, r, c in bins), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(bins), 1)
    bar = slot * 0.38

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    parts = [
        f'<svg class="chart histogram" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        level = top * fraction
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(level):.1f}" '
            f'y2="{y(level):.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y(level) + 4:.1f}" text-anchor="end">'
            f"{escape(_number(round(level * 100, 1)))}%</text>"
        )
    for index, (label, reference, captured) in enumerate(bins):
        left = LEFT + slot * index + slot * 0.12
        for offset, (name, share, colour) in enumerate(
            (("reference", reference, PALETTE[0]), ("captured", captured, PALETTE[1]))
        ):
            parts.append(
                f'<rect class="bar {name}" x="{left + offset * bar:.1f}" y="{y(share):.1f}" '
                f'width="{bar:.1f}" height="{TOP + plot_h - y(share):.1f}" fill="{colour}">'
                f"<title>{escape(label)}: {name} {share * 100:.1f}%</title></rect>"
            )
    parts.append(
        f'<text class="axis" x="{LEFT}" y="{HEIGHT - 6}">low</text>'
        f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">high</text>'
        "</svg>"
    )
    return Markup("".join(parts))  # noqa: S704 - built here from numbers and escaped text
