"""The drift share over time as a small inline SVG: no JavaScript and no CDN, since the
machines running Airflow may have no internet access."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

_COLORS = ("#2563eb", "#7c3aed", "#0d9488", "#c2410c", "#4b5563")
_BREACH = "#dc2626"


def drift_chart_svg(
    series: Sequence[Mapping[str, Any]], threshold: float, width: int = 960, height: int = 190
) -> str:
    """``series``: points with ``window_end`` (ISO), ``drift_share``, ``model_version``,
    ``breach``, oldest first. One line per model version, the threshold dashed, windows
    that breached in red. An empty series gives an empty string."""
    points = [p for p in series if p.get("drift_share") is not None and p.get("window_end")]
    if not points:
        return ""
    left, right, top, bottom = 44, 16, 14, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    times = [_seconds(p["window_end"]) for p in points]
    first, last = min(times), max(times)
    span = (last - first) or 1.0
    top_value = max(threshold, *(p["drift_share"] for p in points))
    y_max = min(1.0, math.ceil(top_value * 1.15 * 10) / 10) or 0.1

    def x(moment: float) -> float:
        return left + (plot_w / 2 if last == first else (moment - first) / span * plot_w)

    def y(value: float) -> float:
        return top + plot_h - min(value, y_max) / y_max * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="drift share per monitoring window">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f8fafc" stroke="#e2e8f0"/>',
    ]
    for tick in (0.0, y_max / 2, y_max):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e2e8f0"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" class="tick">{tick:.2f}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
        f'stroke="{_BREACH}" stroke-dasharray="5 4"/>'
        f'<text x="{left + plot_w - 4}" y="{y(threshold) - 5:.1f}" text-anchor="end" class="tick" '
        f'fill="{_BREACH}">threshold {threshold:.2f}</text>'
    )
    versions = list(dict.fromkeys(str(p.get("model_version")) for p in points))
    for index, version in enumerate(versions):
        color = _COLORS[index % len(_COLORS)]
        mine = [(t, p) for t, p in zip(times, points, strict=True) if str(p.get("model_version")) == version]
        path = " ".join(f"{x(t):.1f},{y(p['drift_share']):.1f}" for t, p in mine)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for moment, point in mine:
            fill = _BREACH if point.get("breach") else color
            label = f"{point['window_end'][:10]} v{version}: {point['drift_share']:.3f}"
            parts.append(
                f'<circle cx="{x(moment):.1f}" cy="{y(point["drift_share"]):.1f}" r="3.5" fill="{fill}">'
                f"<title>{escape(label)}</title></circle>"
            )
        parts.append(
            f'<text x="{left + 8 + index * 70}" y="{top + 14}" class="tick" fill="{color}">'
            f"&#9679; v{escape(version)}</text>"
        )
    for moment, anchor in ((first, "start"), (last, "end")):
        day = dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d")
        parts.append(
            f'<text x="{x(moment):.1f}" y="{height - 10}" text-anchor="{anchor}" class="tick">{day}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _seconds(iso: str) -> float:
    """Seconds since the epoch of an ISO time; naive times are UTC (the tables' convention)."""
    moment = dt.datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
