"""Task links find the MLflow run only for Esteira's tasks; the drift chart draws every
window, breaches in red, without any script."""

from __future__ import annotations

import re

import pytest

from esteira.ui import links
from esteira.ui.chart import drift_chart_svg


@pytest.mark.parametrize(
    ("task_id", "tags", "expected"),
    [
        ("train_candidate", ["esteira", "churn"], ("train_candidate", "run_id")),
        ("evaluate_gate", {"esteira"}, ("build_training_set", "parent_run_id")),
        ("monitor_window", ["esteira"], ("monitor_window", "report_run_id")),
        ("plan_candidates", ["esteira"], None),
        ("train_candidate", ["someone_else"], None),
    ],
)
def test_run_source_only_for_esteira_tasks_with_a_run(task_id, tags, expected):
    assert links.run_source(task_id, tags) == expected


def test_values_without_a_run_or_model_give_no_link():
    assert links.run_id_from({"run_id": "r1"}, "run_id") == "r1"
    assert links.run_id_from({"run_id": ""}, "run_id") is None
    assert links.run_id_from("not a mapping", "run_id") is None
    assert links.model_version_from({"model_name": "churn", "version": 3}) == ("churn", "3")
    assert links.model_version_from({"model_name": "churn"}) is None


def test_urls_encode_run_ids_and_point_at_mlflow_routes():
    assert links.airflow_run_url("", "churn__model_training", "manual__2026-03-01T00:00:00+00:00") == (
        "/dags/churn__model_training/runs/manual__2026-03-01T00%3A00%3A00%2B00%3A00"
    )
    assert links.mlflow_run_url("http://m:5000/", "abc") == "http://m:5000/#/runs/abc"
    assert links.mlflow_run_url("http://m:5000", "abc", "7") == "http://m:5000/#/experiments/7/runs/abc"
    assert links.mlflow_model_url("http://m", "churn", 2) == "http://m/#/models/churn/versions/2"


def _point(day: int, share: float, version: str = "1", breach: bool = False) -> dict:
    return {"window_end": f"2026-03-{day:02d}T00:00", "drift_share": share,
            "model_version": version, "breach": breach}


def test_chart_draws_each_window_per_version_with_breaches_in_red():
    series = [_point(1, 0.1), _point(2, 0.2), _point(3, 0.6, breach=True), _point(3, 0.3, "2")]
    svg = drift_chart_svg(series, threshold=0.25)
    assert svg.startswith("<svg") and "<script" not in svg
    assert svg.count("<circle") == 4 and svg.count("<polyline") == 2
    assert len(re.findall(r'<circle[^>]*fill="#dc2626"', svg)) == 1
    assert "threshold 0.25" in svg and "2026-03-01" in svg and "2026-03-03" in svg


def test_chart_of_nothing_is_empty_and_a_single_window_is_drawn():
    assert drift_chart_svg([], threshold=0.3) == ""
    assert drift_chart_svg([_point(1, 0.0)], threshold=0.3).count("<circle") == 1
