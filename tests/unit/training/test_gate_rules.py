"""The gate's decision from metrics: MLflow's thresholds plus declared tolerances."""

from __future__ import annotations

import pytest
from mlflow.models import EvaluationResult

from esteira.evaluation.gate import GateConfigError, decide
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
