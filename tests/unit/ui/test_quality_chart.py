"""The monitoring chart draws quality, estimated and realized, on one panel below the drift
share, only once a window has a quality value."""

from __future__ import annotations

import re

from esteira.ui.chart import drift_chart_svg


def _point(day: int, estimated: float | None, realized: float | None, version: str = "1") -> dict:
    return {"window_end": f"2026-03-{day:02d}T00:00", "drift_share": 0.1, "model_version": version,
            "breach": False, "quality_metric": "roc_auc", "estimated_quality": estimated,
            "realized_quality": realized, "quality_floor": 0.82}


def test_estimated_and_realized_share_one_panel_with_the_breach_floor():
    series = [_point(1, 0.87, 0.86), _point(2, 0.88, 0.87), _point(3, 0.70, None)]
    svg = drift_chart_svg(series, threshold=0.25)
    assert svg.startswith("<svg") and "<script" not in svg
    # one drift line, an estimated (dashed) and a realized line
    assert svg.count("<polyline") == 3 and svg.count('stroke-dasharray="6 4"') == 1
    assert svg.count("<circle") == 3 and svg.count("<rect") == 2 + 3 + 2  # panels, then markers
    assert "breach below 0.82" in svg and "roc_auc" in svg
    assert "2026-03-03 v1 estimated roc_auc: 0.700" in svg
    assert "realized roc_auc: " in svg and "2026-03-03 v1 realized" not in svg


def test_without_quality_only_the_drift_panel_is_drawn():
    series = [_point(1, None, None), _point(2, float("nan"), None)]
    svg = drift_chart_svg(series, threshold=0.25)
    assert svg.count("<polyline") == 1 and "breach below" not in svg
    assert re.search(r'viewBox="0 0 960 190"', svg)
