"""Charts of recent home readings as server-rendered SVG (no script: the CSP allows none inline).

Pure: takes plain points, returns markup. Blood pressure draws systolic and diastolic
lines against the 140/90 target and the 180/110 urgent thresholds; glucose draws its
line against 3.9 (urgent low), 7.0 (fasting target) and 16.7 (urgent high) mmol/L.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

W, H = 360, 200
LEFT, RIGHT, TOP, BOTTOM = 34, 8, 10, 24


@dataclass(frozen=True)
class Series:
    name: str
    values: list[float]
    css: str
    color: str = "#1565c0"


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str
    css: str


def _y(value: float, lo: float, hi: float) -> float:
    return TOP + (H - TOP - BOTTOM) * (1 - (value - lo) / (hi - lo))


def _x(i: int, n: int) -> float:
    if n <= 1:
        return (LEFT + W - RIGHT) / 2
    return LEFT + (W - LEFT - RIGHT) * i / (n - 1)


def svg(
    title: str,
    times: list[datetime],
    series: list[Series],
    thresholds: list[Threshold],
    lo: float,
    hi: float,
    time_label: list[str],
    urgent: list[bool] | None = None,
) -> Markup:
    """An accessible SVG line chart (oldest left); `time_label` are the x labels shown."""
    n = len(times)
    parts = [
        f'<svg class="fd-chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" class="plot" fill="#fafafa" stroke="#ddd"/>',
    ]
    for t in thresholds:
        y = _y(t.value, lo, hi)
        color = "#c62828" if t.css == "urgent" else "#2e7d32"
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="{t.css}" '
            f'stroke="{color}" stroke-dasharray="4 3"/>'
        )
        parts.append(
            f'<text x="{LEFT - 3}" y="{y + 3:.1f}" class="axis" font-size="10" fill="#666" text-anchor="end">{escape(t.label)}</text>'
        )
    for s in series:
        pts = [(_x(i, n), _y(min(max(v, lo), hi), lo, hi)) for i, v in enumerate(s.values)]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline points="{path}" class="{s.css}" fill="none" stroke="{s.color}" stroke-width="2"/>')
        for i, (x, y) in enumerate(pts):
            hot = urgent is not None and urgent[i]
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{4 if hot else 2.5}" class="{s.css}{" hot" if hot else ""}" '
                f'fill="{"#fff" if hot else s.color}" stroke="{"#c62828" if hot else s.color}" stroke-width="2">'
                f"<title>{escape(s.name)} {s.values[i]:g}</title></circle>"
            )
    if n:
        for i in sorted({0, n - 1}):
            anchor = "start" if i == 0 and n > 1 else "end" if n > 1 else "middle"
            parts.append(
                f'<text x="{_x(i, n):.1f}" y="{H - 6}" class="axis" font-size="10" fill="#666" text-anchor="{anchor}">{escape(time_label[i])}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
