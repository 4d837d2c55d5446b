"""The gate's decision from metrics: MLflow's thresholds plus declared tolerances; when a
candidate is nothing new; the comparison every view shows."""

from __future__ import annotations

import pytest
from mlflow.models import EvaluationResult

from esteira.evaluation.comparison import compare, text_lines
from esteira.evaluation.gate import GateConfigError, decide
from esteira.evaluation.novelty import asks_for_improvement, same_training, unchanged_metrics
from esteira.usecase import GateSpec
from tests.unit.training.synthetic import churn_usecase


def _uc(*rules):
    return churn_usecase().model_copy(update={"gate": GateSpec(thresholds=list(rules))})


def _result(**metrics):
    return EvaluationResult(metrics=metrics, artifacts={})


def test_without_a_champion_only_absolute_thresholds_apply():
    uc = churn_usecase()  # roc_auc >= 0.6 and no worse than champion; log_loss tolerance
    assert decide(uc, _result(roc_auc=0.7, log_loss=0.9), None) == []
    reasons = decide(uc, _result(roc_auc=0.55, log_loss=0.1), None)
    assert len(reasons) == 1 and "roc_auc value threshold check failed" in reasons[0]


def test_tolerances_allow_a_bounded_regression_against_the_champion():
    uc = churn_usecase()  # roc_auc min_absolute_change 0.0; log_loss min_relative_change -0.05
    champion = _result(roc_auc=0.80, log_loss=0.40)
    assert decide(uc, _result(roc_auc=0.80, log_loss=0.419), champion) == []
    reasons = decide(uc, _result(roc_auc=0.79, log_loss=0.43), champion)
    assert [r.split(" ")[1] for r in reasons] == ["roc_auc", "log_loss"]


def test_a_required_improvement_is_checked_by_mlflow():
    uc = _uc({"metric": "rmse", "greater_is_better": False, "min_relative_change": 0.1})
    champion = _result(root_mean_squared_error=10.0)
    assert decide(uc, _result(root_mean_squared_error=8.9), champion) == []
    reasons = decide(uc, _result(root_mean_squared_error=9.5), champion)
    assert len(reasons) == 1 and "minimum relative change check failed" in reasons[0]


def test_a_rule_on_a_metric_the_evaluation_lacks_is_a_config_error():
    uc = _uc({"metric": "auc_pr", "threshold": 0.5})
    with pytest.raises(GateConfigError, match="auc_pr"):
        decide(uc, _result(roc_auc=0.9), None)


IDENTITY = {
    "lineage.table_uri": "/d/churn_features", "lineage.version": "4",
    "lineage.labels_uri": "/d/churn_features_labels", "lineage.labels_version": "2",
    "lineage.start": "1985-11-17 00:00:00", "lineage.end": "1986-01-01 00:00:00",
    "esteira.config_sha256": "c" * 64, "esteira.candidate": "logistic_regression(C=1.0)",
}


def test_a_retrain_on_the_champions_data_config_and_candidate_is_nothing_new():
    reason = same_training(dict(IDENTITY), dict(IDENTITY), 3)
    assert reason.startswith("nothing new: trained exactly as champion v3 was")
    assert "window [1985-11-17, 1986-01-01)" in reason
    for key in IDENTITY:
        assert same_training({**IDENTITY, key: "other"}, IDENTITY, 3) is None, key
    # A champion registered outside Esteira carries no lineage tags: never "the same".
    assert same_training(IDENTITY, {}, 3) is None


def test_equal_metrics_are_nothing_new_unless_a_threshold_asks_for_an_improvement():
    uc = churn_usecase()  # roc_auc no worse than the champion; log_loss at most 5 % worse
    champion = {"roc_auc": 0.80, "log_loss": 0.40, "f1_score": 0.5}
    same = {"roc_auc": 0.80 + 1e-9, "log_loss": 0.40, "f1_score": 0.9}
    assert unchanged_metrics(uc, same, champion, 1).startswith("nothing new: roc_auc 0.8000")
    assert unchanged_metrics(uc, {**same, "log_loss": 0.39}, champion, 1) is None
    assert unchanged_metrics(uc, {"roc_auc": 0.80}, champion, 1) is None
    strict = _uc({"metric": "roc_auc", "min_absolute_change": 0.01})
    assert asks_for_improvement(strict.gate.thresholds[0])
    assert unchanged_metrics(strict, same, champion, 1) is None
    # ... and then the gate itself rejects the equal candidate.
    assert decide(strict, _result(**same), _result(**champion))


def test_the_comparison_puts_both_models_side_by_side_with_the_rules_in_words():
    uc = churn_usecase()
    rows = compare({"roc_auc": 0.77, "log_loss": 0.5}, {"roc_auc": 0.75, "log_loss": 0.48},
                   [r.model_dump() for r in uc.gate.thresholds], ["roc_auc"])
    assert [r.metric for r in rows] == ["roc_auc", "log_loss"]
    assert rows[0].change == pytest.approx(0.02)
    assert rows[0].rule == ">= 0.6; no worse than champion"
    assert rows[1].rule == "at most 5% worse than champion" and not rows[1].greater_is_better
    lines = text_lines([r.to_dict() for r in rows], 1)
    assert "champion v1" in lines[0] and "+0.0200" in lines[1]
    assert compare({"roc_auc": 0.7}, None, [], ["roc_auc"])[0].change is None
