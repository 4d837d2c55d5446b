"""The monitoring windows over time as a small inline SVG: no JavaScript and no CDN, since
the machines running Airflow may have no internet access.

The top panel is the drift share; below it, once any window has a quality value, the
model's quality metric, estimated (before the labels arrive) and realized (after) on one
panel, so the estimate can be read against what the labels later said.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

_COLORS = ("#2563eb", "#7c3aed", "#0d9488", "#c2410c", "#4b5563")
_BREACH = "#dc2626"
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 16, 14, 30
_QUALITY_HEIGHT = 170


@dataclass(frozen=True)
class _Frame:
    """One panel's plotting area and its scales."""

    top: float
    height: float
    width: float
    low: float
    high: float
    x: Callable[[float], float]

    def y(self, value: float) -> float:
        clipped = min(max(value, self.low), self.high)
        return self.top + self.height - (clipped - self.low) / (self.high - self.low) * self.height


def drift_chart_svg(
    series: Sequence[Mapping[str, Any]], threshold: float, width: int = 960, height: int = 190
) -> str:
    """``series``: points with ``window_end`` (ISO), ``drift_share``, ``model_version``,
    ``breach``, oldest first; optionally ``quality_metric``, ``estimated_quality``,
    ``realized_quality`` and ``quality_floor`` (the value under which quality breaches).
    One line per model version, the thresholds dashed, windows that breached in red. An
    empty series gives an empty string."""
    points = [p for p in series if p.get("drift_share") is not None and p.get("window_end")]
    if not points:
        return ""
    plot_w = width - _LEFT - _RIGHT
    times = [_seconds(p["window_end"]) for p in points]
    first, last = min(times), max(times)
    span = (last - first) or 1.0

    def x(moment: float) -> float:
        return _LEFT + (plot_w / 2 if last == first else (moment - first) / span * plot_w)

    quality = [p for p in points if _number(p, "estimated_quality") is not None or _number(p, "realized_quality") is not None]
    total = height + (_QUALITY_HEIGHT if quality else 0)
    top_value = max(threshold, *(p["drift_share"] for p in points))
    drift = _Frame(_TOP, height - _TOP - _BOTTOM, plot_w, 0.0, min(1.0, math.ceil(top_value * 1.15 * 10) / 10) or 0.1, x)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {total}" '
        f'width="100%" role="img" aria-label="drift share{" and model quality" if quality else ""} per monitoring window">',
        *_axes(drift, f"threshold {threshold:.2f}", threshold),
    ]
    versions = list(dict.fromkeys(str(p.get("model_version")) for p in points))
    for index, version in enumerate(versions):
        color = _COLORS[index % len(_COLORS)]
        mine = [(t, p) for t, p in zip(times, points, strict=True) if str(p.get("model_version")) == version]
        parts += _line(drift, mine, "drift_share", color, f"v{version} drift share", solid=True, red_when="breach")
        parts.append(
            f'<text x="{_LEFT + 8 + index * 70}" y="{_TOP + 14}" class="tick" fill="{color}">'
            f"&#9679; v{escape(version)}</text>"
        )
    if quality:
        parts += _quality_panel(quality, [_seconds(p["window_end"]) for p in quality], versions, x, height, plot_w)
    for moment, anchor in ((first, "start"), (last, "end")):
        day = dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d")
        parts.append(
            f'<text x="{x(moment):.1f}" y="{total - 10}" text-anchor="{anchor}" class="tick">{day}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _quality_panel(
    points: list[Mapping[str, Any]], times: list[float], versions: list[str],
    x: Callable[[float], float], offset: int, plot_w: int,
) -> list[str]:
    """Estimated (dashed, hollow squares) and realized (solid) quality per version, with the
    newest version's breach floor dashed in red; circles stay one per drift window."""
    metric = next((str(p["quality_metric"]) for p in reversed(points) if p.get("quality_metric")), "quality")
    values = [v for p in points for v in (_number(p, "estimated_quality"), _number(p, "realized_quality")) if v is not None]
    floor = next((_number(p, "quality_floor") for p in reversed(points) if _number(p, "quality_floor") is not None), None)
    low = math.floor((min(values + ([floor] if floor is not None else [])) - 0.02) * 20) / 20
    high = min(1.0, math.ceil((max(values) + 0.02) * 20) / 20)
    frame = _Frame(offset, _QUALITY_HEIGHT - _BOTTOM, plot_w, low, high if high > low else low + 0.05, x)
    parts = _axes(frame, None if floor is None else f"breach below {floor:.2f}", floor)
    for index, version in enumerate(versions):
        color = _COLORS[index % len(_COLORS)]
        mine = [(t, p) for t, p in zip(times, points, strict=True) if str(p.get("model_version")) == version]
        parts += _line(frame, mine, "estimated_quality", color, f"v{version} estimated {metric}", solid=False, marker="square")
        parts += _line(frame, mine, "realized_quality", color, f"v{version} realized {metric}", solid=True, marker="square")
    parts.append(
        f'<text x="{_LEFT + 8}" y="{offset + 14}" class="tick">{escape(metric)}: '
        f"&#8212; realized (labels) &#183; - - estimated (before labels)</text>"
    )
    return parts


def _axes(frame: _Frame, label: str | None, level: float | None) -> list[str]:
    """The panel's background, three ticks and a dashed red line at ``level``."""
    parts = [
        f'<rect x="{_LEFT}" y="{frame.top}" width="{frame.width}" height="{frame.height}" fill="#f8fafc" stroke="#e2e8f0"/>'
    ]
    for tick in (frame.low, (frame.low + frame.high) / 2, frame.high):
        parts.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + frame.width}" y1="{frame.y(tick):.1f}" y2="{frame.y(tick):.1f}" stroke="#e2e8f0"/>'
            f'<text x="{_LEFT - 6}" y="{frame.y(tick) + 4:.1f}" text-anchor="end" class="tick">{tick:.2f}</text>'
        )
    if level is not None and label is not None:
        parts.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + frame.width}" y1="{frame.y(level):.1f}" y2="{frame.y(level):.1f}" '
            f'stroke="{_BREACH}" stroke-dasharray="5 4"/>'
            f'<text x="{_LEFT + frame.width - 4}" y="{frame.y(level) - 5:.1f}" text-anchor="end" class="tick" '
            f'fill="{_BREACH}">{escape(label)}</text>'
        )
    return parts


def _line(
    frame: _Frame, points: list[tuple[float, Mapping[str, Any]]], key: str, color: str, name: str,
    solid: bool, red_when: str | None = None, marker: str = "circle",
) -> list[str]:
    """A polyline through the points that have ``key``, and a marker per window (``circle``
    or a square) with its value as a tooltip; dashed with hollow markers when not ``solid``."""
    drawn = [(t, p, _number(p, key)) for t, p in points if _number(p, key) is not None]
    if not drawn:
        return []
    path = " ".join(f"{frame.x(t):.1f},{frame.y(v):.1f}" for t, _, v in drawn)
    dash = "" if solid else ' stroke-dasharray="6 4"'
    parts = [f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>']
    for moment, point, value in drawn:
        fill = _BREACH if red_when and point.get(red_when) else color
        paint = f'fill="{fill}"' if solid else f'fill="#ffffff" stroke="{fill}" stroke-width="2"'
        label = escape(f"{point['window_end'][:10]} {name}: {value:.3f}")
        cx, cy = frame.x(moment), frame.y(value)
        parts.append(
            f'<{marker} cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" {paint}><title>{label}</title></{marker}>'
            if marker == "circle" else
            f'<rect x="{cx - 3.5:.1f}" y="{cy - 3.5:.1f}" width="7" height="7" {paint}><title>{label}</title></rect>'
        )
    return parts


def _number(point: Mapping[str, Any], key: str) -> float | None:
    value = point.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _seconds(iso: str) -> float:
    """Seconds since the epoch of an ISO time; naive times are UTC (the tables' convention)."""
    moment = dt.datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
