"""Estimated quality (CBPE): exact when the probabilities are the labels, close to the
realized metric under covariate shift once calibrated, and the declared rule decides which
quality drop counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.metrics import accuracy_score, roc_auc_score

from esteira.monitoring.estimation import (
    SCORE_COLUMN,
    SPLIT_COLUMN,
    Calibrator,
    calibrator,
    estimate_quality,
    expected_accuracy,
    expected_roc_auc,
)
from esteira.monitoring.monitor import quality_breach
from esteira.usecase import UseCase
from tests.unit.monitoring.frames import churn_usecase


def _scored(rows: int, seed: int, loc: float = 0.0, scale: float = 1.0) -> pd.DataFrame:
    """A miscalibrated model (scores sharper than the truth) on inputs drawn around ``loc``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc, scale, rows)
    truth = 1 / (1 + np.exp(-(2 * x - 0.5)))
    score = 1 / (1 + np.exp(-(3 * x - 0.2)))
    return pd.DataFrame({"churned": (rng.random(rows) < truth).astype(int), SCORE_COLUMN: score})


def test_with_certain_probabilities_the_expectation_is_the_metric():
    frame = _scored(5000, seed=1)
    labels, scores = frame["churned"].to_numpy(), frame[SCORE_COLUMN].to_numpy()
    predicted = (scores >= 0.5).astype(int)
    assert expected_roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert expected_accuracy(predicted, labels) == pytest.approx(accuracy_score(labels, predicted))


def test_tied_scores_count_as_one_threshold():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([1, 1, 0, 0])
    assert expected_roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


@pytest.mark.parametrize(("loc", "scale"), [(0.0, 1.0), (1.0, 0.5), (-0.5, 0.3), (0.3, 2.0)])
def test_calibrated_estimates_follow_the_realized_metrics_under_covariate_shift(loc, scale):
    reference = _scored(20_000, seed=2)
    calibration = Calibrator(reference[SCORE_COLUMN].to_numpy(), reference["churned"].to_numpy())
    window = _scored(20_000, seed=3, loc=loc, scale=scale)
    labels, scores = window["churned"].to_numpy(), window[SCORE_COLUMN].to_numpy()
    predicted = (scores >= 0.5).astype(int)
    uc = churn_usecase()
    estimate = estimate_quality(uc, calibration, scores, predicted, {"test_roc_auc": 0.86})
    assert estimate.metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=0.015)
    assert estimate.metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=0.015)
    assert estimate.drop == pytest.approx(0.86 - estimate.metrics["roc_auc"])
    assert estimate.breach == (estimate.drop > uc.monitoring.quality_max_drop)


def test_uncalibrated_scores_would_mislead():
    window = _scored(20_000, seed=3, loc=1.0, scale=0.5)
    labels, scores = window["churned"].to_numpy(), window[SCORE_COLUMN].to_numpy()
    assert abs(expected_roc_auc(scores, scores) - roc_auc_score(labels, scores)) > 0.03


def test_calibration_uses_held_out_rows_only_and_needs_enough_of_them():
    reference = _scored(1000, seed=4).assign(**{SPLIT_COLUMN: ["train"] * 850 + ["test"] * 150})
    assert calibrator(reference, "churned") is None  # 150 held-out rows are too few
    reference[SPLIT_COLUMN] = ["train"] * 500 + ["validation"] * 250 + ["test"] * 250
    assert calibrator(reference, "churned").rows == 500


def test_the_rule_says_which_quality_drop_breaches():
    uc = churn_usecase()
    for quality, expected in {"realized": (True, False, True), "estimated": (False, True, True),
                              "both": (True, True, True)}.items():
        rule = uc.model_copy(update={"retraining": uc.retraining.model_copy(update={"quality": quality})})
        assert tuple(quality_breach(rule, r, e) for r, e in ((True, False), (False, True), (True, True))) == expected
        assert not quality_breach(rule, False, False)


def _yaml(**retraining) -> dict:
    data = churn_usecase().model_dump(by_alias=True, exclude_unset=True)
    return data | {"retraining": data.get("retraining", {}) | retraining}


def test_quality_key_is_validated():
    assert UseCase.model_validate(_yaml(quality="both")).retraining.quality == "both"
    unset = _yaml()
    unset["retraining"].pop("quality", None)
    assert UseCase.model_validate(unset).retraining.quality == "realized"
    with pytest.raises(ValidationError, match="retraining.quality"):
        UseCase.model_validate(_yaml(quality="sometimes"))
    regression = _yaml(quality="estimated") | {"problem_type": "regression"}
    with pytest.raises(ValidationError, match="binary classification only"):
        UseCase.model_validate(regression)
    log_loss = _yaml(quality="estimated")
    log_loss["training"] = log_loss["training"] | {"primary_metric": "log_loss"}
    with pytest.raises(ValidationError, match="'log_loss' is not estimated"):
        UseCase.model_validate(log_loss)
