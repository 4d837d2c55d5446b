"""What the Esteira page gathers: registry state and lineage from a real MLflow server, the
monitoring windows from a real Delta table, and a clear message instead of an error when a
part is missing or MLflow is down."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from esteira.config import get_settings, get_usecase
from esteira.stack import process
from esteira.ui import overview
from esteira.ui.page import render_page
from tests.unit.ui.seed import (
    REPORT_MARKER,
    TRAINING_DAG_RUN,
    WINDOWS,
    seed_monitoring,
    seed_registry,
)


def _usecase(model_name: str):
    uc = get_usecase("churn")
    return uc.model_copy(update={"registry": uc.registry.model_copy(update={"model_name": model_name})})


@pytest.fixture(scope="module")
def seeded(mlflow_server, tmp_path_factory):
    """A seeded belt under its own home and model name, shared by this module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ESTEIRA_HOME", str(tmp_path_factory.mktemp("ui_home")))
        patch.setenv("ESTEIRA_MODEL_SERVER_URL", "off")
        uc = _usecase(f"ui_{uuid.uuid4().hex[:8]}")
        settings = get_settings()
        versions = seed_registry(uc, settings)
        reports = seed_monitoring(uc, settings, versions["champion"])
        yield uc, settings, versions, reports


def test_champion_and_challenger_carry_gate_approval_and_links(seeded):
    uc, settings, versions, _ = seeded
    view = overview.usecase_overview(uc, settings, "/base", "/base/esteira/reports")
    assert view["problems"] == []
    champion, challenger = view["champion"], view["challenger"]
    assert champion["version"] == versions["champion"] and champion["aliases"] == ["champion"]
    assert challenger["version"] == versions["challenger"]
    assert champion["gate"]["key_metrics"] == {"roc_auc": 0.78, "log_loss": 0.22}
    assert champion["gate"]["compared_champion"] == str(versions["first"])
    assert champion["approval"] == {
        "decision": "approved", "by": "alice", "reason": "better AUC on March data",
        "at": champion["approval"]["at"],
    }
    assert champion["promotion"]["previous_champion"] == str(versions["first"])
    assert challenger["approval"] is None and challenger["promotion"] is None
    mlflow_ui = settings.mlflow_ui_url
    assert champion["links"]["model"] == f"{mlflow_ui}/#/models/{uc.model_name}/versions/{versions['champion']}"
    assert champion["links"]["run"] == (
        f"{mlflow_ui}/#/experiments/{champion['experiment_id']}/runs/{champion['run_id']}"
    )
    assert champion["links"]["dag_run"] == (
        "/base/dags/churn__model_training/runs/manual__2026-03-01T00%3A00%3A00%2B00%3A00"
    )
    assert champion["airflow_run_id"] == TRAINING_DAG_RUN


def test_lineage_runs_from_feature_table_to_deployment(seeded):
    uc, settings, versions, _ = seeded
    view = overview.usecase_overview(uc, settings)
    steps = {step["title"]: step for step in view["lineage"]}
    assert list(steps) == ["Feature table", "Training run", "Model version", "Approval", "Deployments"]
    assert steps["Feature table"]["value"] == "churn_features @ Delta v4"
    assert "2026-01-01 to 2026-03-01" in steps["Feature table"]["detail"]
    assert steps["Training run"]["value"] == view["champion"]["run_id"][:12]
    assert steps["Model version"]["value"] == f"v{versions['champion']}"
    assert f"vs champion v{versions['first']}" in steps["Model version"]["detail"]
    assert steps["Approval"]["value"] == "approved by alice"
    assert steps["Deployments"]["detail"] == "promoted by alice"
    actions = [(e["action"], e["version"]) for e in view["history"]]
    assert actions[:3] == [
        ("register_challenger", versions["challenger"]),
        ("promote", versions["champion"]),
        ("approval_approved", versions["champion"]),
    ]


def test_monitoring_shows_latest_windows_and_the_newest_report(seeded):
    uc, settings, versions, reports = seeded
    monitoring = overview.usecase_overview(uc, settings, "", "/esteira/usecases/churn/reports")["monitoring"]
    assert monitoring["available"]
    windows = monitoring["windows"]
    assert len(windows) == WINDOWS and windows[0]["window_end"] == "2026-03-09T00:00"
    assert windows[0]["breach"] and windows[0]["retrain"] and not windows[-1]["breach"]
    assert windows[0]["drifted_columns"] == ["monthly_charges", "session_minutes", "device"]
    assert [p["window_end"] for p in monitoring["series"]] == sorted(p["window_end"] for p in monitoring["series"])
    report = monitoring["latest_report"]
    assert report["run_id"] == reports[-1]
    assert report["html"] == f"/esteira/usecases/churn/reports/{reports[-1]}"
    assert report["mlflow"].endswith(f"/runs/{reports[-1]}/artifacts/monitoring/drift.html")
    assert REPORT_MARKER in overview.report_html(uc, settings, reports[-1])


def test_report_of_another_run_is_refused(seeded):
    uc, settings, _, _ = seeded
    training_run = overview.usecase_overview(uc, settings)["champion"]["run_id"]
    with pytest.raises(LookupError, match="not a monitoring run"):
        overview.report_html(uc, settings, training_run)


def test_nothing_registered_and_no_monitoring_table(mlflow_server, esteira_home, monkeypatch):
    monkeypatch.setenv("ESTEIRA_MODEL_SERVER_URL", "off")
    uc = _usecase(f"ui_empty_{uuid.uuid4().hex[:8]}")
    view = overview.usecase_overview(uc, get_settings())
    assert view["problems"] == []
    assert (view["registered"], view["champion"], view["challenger"], view["lineage"]) == (False, None, None, [])
    assert view["monitoring"]["available"] is False
    assert view["monitoring"]["message"] == "No monitoring window recorded yet"
    html = render_page([view], "2026-03-01T00:00:00+00:00", "http://mlflow")
    assert "No champion yet" in html and "No monitoring window recorded yet." in html
    assert 'class="card lineage"' not in html and 'class="card history"' not in html


def test_mlflow_down_is_a_message_and_the_monitoring_table_still_shows(seeded):
    uc, settings, _, _ = seeded
    down = dataclasses.replace(settings, tracking_uri=f"http://127.0.0.1:{process.free_port()}")
    started = time.monotonic()
    problem = overview.mlflow_problem(down.tracking_uri)
    view = overview.usecase_overview(uc, down, mlflow_down=problem)
    assert time.monotonic() - started < 5
    assert problem and problem.startswith(f"MLflow is not reachable at {down.tracking_uri}")
    assert view["problems"] == [problem] and view["champion"] is None
    assert view["monitoring"]["available"] and view["monitoring"]["latest_report"]["html"] is None
    html = render_page([view], "2026-03-01T00:00:00+00:00", down.mlflow_ui_url)
    assert "MLflow is not reachable" in html and "Unknown: MLflow is not reachable." in html


def test_page_shows_versions_lineage_chart_and_escapes_text(seeded):
    uc, settings, versions, _ = seeded
    view = overview.usecase_overview(uc, settings, "", "/esteira/r")
    view["champion"]["approval"]["reason"] = "<script>alert(1)</script>"
    html = render_page([view], "2026-03-01T00:00:00+00:00", settings.mlflow_ui_url)
    assert f'data-version="{versions["champion"]}"' in html
    assert f'data-version="{versions["challenger"]}"' in html
    assert html.count('class="step"') == 5
    assert html.count("<circle") == WINDOWS and "threshold 0.25" in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_each_version_and_promotion_shows_the_gates_comparison_not_its_own_metrics(seeded):
    """v2 scored 0.78 on its own test set and v1 0.71 on an older one; what decided was both
    on v2's test set (v1 at 0.75 there), with the thresholds that applied."""
    uc, settings, versions, _ = seeded
    view = overview.usecase_overview(uc, settings)
    rows = {row["metric"]: row for row in view["champion"]["gate"]["comparison"]}
    assert list(rows) == ["roc_auc", "log_loss"]
    assert (rows["roc_auc"]["candidate"], rows["roc_auc"]["champion"]) == (0.78, pytest.approx(0.75))
    assert rows["roc_auc"]["rule"] == ">= 0.6; no worse than champion"
    assert rows["log_loss"]["better"] == "lower"
    promotions = [e for e in view["history"] if e["action"] == "promote"]
    assert [e["compared_champion"] for e in promotions] == [str(versions["first"]), "none"]
    assert promotions[1]["comparison"][0]["champion"] is None
    html = render_page([view], "2026-03-01T00:00:00+00:00", settings.mlflow_ui_url)
    assert html.count('class="gate-comparison"') == 2 + len(promotions)
    assert f"champion v{versions['first']}" in html and "no worse than champion" in html
