"""Quality: a drop of the primary metric beyond quality_max_drop is a breach."""

from __future__ import annotations

import pytest
from sklearn.metrics import log_loss, roc_auc_score

from esteira.monitoring.quality import compute_quality
from tests.unit.monitoring.frames import churn_usecase, labeled_predictions


@pytest.fixture(scope="module")
def uc():
    return churn_usecase(sample_size=3000)


def test_metrics_match_sklearn(uc):
    labeled = labeled_predictions(2000, seed=1, skill=1.0)
    auc = roc_auc_score(labeled["churned"], labeled["prediction"])
    result = compute_quality(labeled, uc, {"test_roc_auc": auc, "test_log_loss": 0.1})
    assert result.metrics["roc_auc"] == pytest.approx(auc)
    assert result.metrics["log_loss"] == pytest.approx(
        log_loss(labeled["churned"], labeled["prediction"])
    )
    assert result.drops["roc_auc"] == pytest.approx(0.0, abs=1e-9)
    assert result.drops["log_loss"] == pytest.approx(result.metrics["log_loss"] - 0.1)
    assert set(result.test_metrics) == {"roc_auc", "log_loss"}
    assert not result.breach
    assert result.rows == result.sampled_rows == 2000


def test_degraded_model_breaches(uc):
    good = compute_quality(labeled_predictions(2000, seed=1, skill=1.0), uc, {"test_roc_auc": 0.5})
    worse = compute_quality(
        labeled_predictions(2000, seed=1, skill=0.3), uc, {"test_roc_auc": good.metrics["roc_auc"]}
    )
    assert worse.primary_metric == "roc_auc"
    assert worse.drop > uc.monitoring.quality_max_drop
    assert worse.breach


def test_single_class_or_no_labels_cannot_be_judged(uc):
    labeled = labeled_predictions(500, seed=1, skill=1.0)
    assert compute_quality(labeled.assign(churned=0), uc, {"test_roc_auc": 0.8}) is None
    assert compute_quality(labeled.head(0), uc, {"test_roc_auc": 0.8}) is None


def test_missing_test_metric_is_named(uc):
    with pytest.raises(ValueError, match="test_roc_auc"):
        compute_quality(labeled_predictions(100, seed=1, skill=1.0), uc, {"test_f1": 0.5})


def test_missing_prediction_column_is_named(uc):
    labeled = labeled_predictions(100, seed=1, skill=1.0).drop(columns="prediction")
    with pytest.raises(ValueError, match="prediction"):
        compute_quality(labeled, uc, {"test_roc_auc": 0.8})
