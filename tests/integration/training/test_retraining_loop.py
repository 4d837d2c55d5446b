"""The retraining loop closes on real stores: the DAG's own task bodies (stages), real Delta
tables refreshed from landing files, a real MLflow server, and the Asset events translated
by the orchestration layer exactly as the scheduler hands them to the training DAG.

A champion learns from a features event's window. A retraining request with no new data is
*nothing new* (the run ends skipped, no version); once new labels arrive, a retraining
request trains up to the newest label even when an older features event came with it (the
bug of issue 21), and its model is registered.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from esteira.orchestration import assets
from esteira.orchestration.context import training_trigger
from esteira.results import NothingToDo
from esteira.stages import model_training as stage
from esteira.stages.drift_monitoring import retraining_request
from esteira.stages.window import RunWindow
from esteira.usecase import UseCase

CHURN = Path(__file__).resolve().parents[3] / "include" / "usecases" / "churn.yaml"
pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST = RunWindow(dt.date(2025, 12, 1), dt.date(2026, 1, 16))
LATER = RunWindow(dt.date(2026, 1, 16), dt.date(2026, 2, 15))


def _usecase() -> UseCase:
    """Churn, smaller and with one candidate; a gate that lets any sane model through, so the
    test is about which data the model learns from, not about its quality."""
    data = yaml.safe_load(CHURN.read_text())
    data["source"]["generator"].update(entities=300, days=80, drift=None)
    data["training"]["candidates"] = [{"family": "logistic_regression", "params": {"C": [1.0]}}]
    data["gate"]["thresholds"] = [{"metric": "roc_auc", "threshold": 0.5, "min_absolute_change": -0.3}]
    data["registry"]["model_name"] = f"churn_loop_{uuid.uuid4().hex[:8]}"
    return UseCase.model_validate(data)


def _context(events: dict) -> dict:
    """The part of a task context the training trigger reads: the triggering Asset events."""
    return {"triggering_asset_events": {
        asset: [SimpleNamespace(extra=extra)] for asset, extra in events.items()
    }}


def _train(uc, context: dict, run_id: str):
    """The training DAG's tasks in order, as `dags/model_training.py` wires them."""
    from esteira.training.candidates import expand_candidates

    trigger = training_trigger(context, assets.features(uc), assets.retraining_request(uc))
    options = stage.TrainingOptions()
    airflow = {"dag_id": uc.dag_id("model_training"), "run_id": run_id, "try_number": 1}
    training = stage.prepare_training(uc, options, trigger, airflow)
    results = [
        stage.run_candidate(uc, options, candidate, training, {**airflow, "map_index": index})
        for index, candidate in enumerate(expand_candidates(uc))
    ]
    best = stage.select_best(uc, results)
    gate = stage.run_gate(uc, options, best, training)
    return training, gate, stage.register_challenger(uc, best, gate, training)


def _refresh(uc, window: RunWindow) -> dict:
    from esteira.stages.feature_refresh import refresh

    return refresh(uc, window, run_id=f"refresh {window}")


def _versions(uc) -> list[str]:
    from esteira import tracking

    return sorted(v.version for v in tracking.client().search_model_versions(f"name = '{uc.model_name}'"))


@pytest.fixture(scope="module")
def loop(mlflow_server, tmp_path_factory):
    """A champion trained on the first refresh's features event, promoted."""
    from esteira.config import get_settings
    from esteira.features.generator import generate_landing
    from esteira.stages.model_promotion import challenger_to_promote, promote

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ESTEIRA_HOME", str(tmp_path_factory.mktemp("loop_home")))
        uc = _usecase()
        settings = get_settings()
        generate_landing(uc, settings.landing_dir / uc.source.landing)
        refreshed = _refresh(uc, FIRST)
        _, gate, registered = _train(uc, _context({assets.features(uc): refreshed}), "champion")
        assert gate["verdict"] == "passed", gate["reasons"]
        promote(uc, challenger_to_promote(uc, None, registered["version"]), None, "champion")
        yield SimpleNamespace(uc=uc, settings=settings, first_event=refreshed, champion=registered["version"])


def _parent_tags(training: dict) -> dict:
    from esteira import tracking

    return tracking.client().get_run(training["parent_run_id"]).data.tags


def test_retraining_without_new_data_is_nothing_new(loop):
    from esteira.registry.transitions import history

    uc = loop.uc
    before = _versions(uc)
    request = retraining_request({"retrain": True, "reason": "drift share 0.40 > 0.25 in 2 of 3 windows",
                                  "window_end": "2026-01-16", "model_version": loop.champion})
    training, gate, registered = _train(uc, _context({assets.retraining_request(uc): request}), "no-new-data")

    # The newest label (2026-01-02) is older than the champion's window end: never learn less.
    assert training["end"] == "2026-01-16T00:00:00"
    assert _parent_tags(training)["esteira.window.rule"] == "retraining_request"
    assert "before the end of the champion's window" in _parent_tags(training)["esteira.window.why"]
    assert gate["verdict"] == "nothing_new" and not gate["passed"]
    assert isinstance(registered, NothingToDo)
    assert registered.reason.startswith(f"nothing new: trained exactly as champion v{loop.champion} was")
    assert _versions(uc) == before
    last = history(uc)[-1]
    assert (last["action"], last["version"]) == ("gate_nothing_new", None)
    assert last["actor"] == f"gate of {uc.dag_id('model_training')} run no-new-data"


def test_retraining_after_new_labels_trains_up_to_the_newest_label(loop):
    from esteira.registry.lineage import read_version
    from esteira.stages.model_training import newest_label_end

    uc = loop.uc
    _refresh(uc, LATER)
    newest = newest_label_end(uc, loop.settings)
    assert newest == dt.datetime(2026, 2, 1)  # the labels of events up to 2026-01-31
    request = retraining_request({"retrain": True, "reason": "quality drop 0.06 > 0.05",
                                  "window_end": "2026-02-15", "model_version": loop.champion})
    # The older features event of the first refresh arrives with the request (issue 21).
    both = _context({assets.features(uc): loop.first_event, assets.retraining_request(uc): request})
    training, gate, registered = _train(uc, both, "new-labels")

    tags = _parent_tags(training)
    assert tags["lineage.end"] == str(newest)
    assert tags["lineage.start"] == str(newest - dt.timedelta(days=uc.training.window_days))
    assert tags["esteira.window.rule"] == "retraining_request"
    assert "quality drop 0.06" in tags["esteira.window.why"] and "newest label" in tags["esteira.window.why"]
    assert gate["verdict"] == "passed", gate["reasons"]
    assert registered["version"] == loop.champion + 1
    record = read_version(uc, registered["version"])
    assert record.training_window == (newest - dt.timedelta(days=uc.training.window_days), newest)
    assert record.gate.compared_champion == loop.champion and record.gate.champion_metrics
