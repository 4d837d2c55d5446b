"""Model quality estimated before the labels arrive: confidence-based performance
estimation (CBPE) for binary classifiers.

The method (NannyML's CBPE, https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html):
if the model's probabilities are calibrated, a row scored p is a positive with probability
p, so each confusion-matrix cell has an expected count (a row predicted positive adds p to
the true positives and 1 - p to the false positives), and every metric built from those
cells has an expected value. The expected ROC AUC is the area under the curve of expected
true- and false-positive rates over the score thresholds; the expected accuracy at the
served threshold is the mean probability that each served class is right.

Calibration: an isotonic regression of the label on the champion's score, fitted on the
reference rows the model did not train on (validation and test: a model's scores on its own
training rows are overconfident). The estimate holds under covariate shift, when the
inputs move but the label given the inputs does not; a change of that relation (concept
drift) is invisible without labels, which is why the realized metric still follows.

NannyML 0.13.1 installs beside the pins, but it imports statsmodels without declaring it,
pulls in about 90 packages (xgboost, lightgbm, cloud filesystems, a telemetry client) and
takes 6 s to import; these few lines compute the same estimate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from esteira.usecase import ESTIMATED_QUALITY_METRICS, UseCase

if TYPE_CHECKING:
    import pandas as pd

    from esteira.serving.model_loader import LoadedModel

SCORE_COLUMN = "champion_score"
SPLIT_COLUMN = "training_split"
HELD_OUT = ("validation", "test")
MIN_CALIBRATION_ROWS = 200


@dataclass(frozen=True)
class EstimatedQuality:
    """The expected metrics of one window, and the primary metric's drop from its test value
    (None when the primary metric is not one that can be estimated)."""

    metrics: Mapping[str, float]
    primary_metric: str
    test_value: float | None
    drop: float | None
    max_drop: float
    rows: int
    calibration_rows: int

    @property
    def value(self) -> float | None:
        return self.metrics.get(self.primary_metric)

    @property
    def breach(self) -> bool:
        return self.drop is not None and self.drop > self.max_drop

    def metrics_json(self) -> str:
        return json.dumps(
            {"metrics": dict(self.metrics), "rows": self.rows, "calibration_rows": self.calibration_rows},
            sort_keys=True,
        )


class Calibrator:
    """Score -> probability of the positive class, fitted on held-out labelled rows."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        from sklearn.isotonic import IsotonicRegression

        self.rows = len(scores)
        self._model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        self._model.fit(np.asarray(scores, dtype=float), np.asarray(labels, dtype=float))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return self._model.predict(np.asarray(scores, dtype=float))


def calibrator(reference: pd.DataFrame, label: str) -> Calibrator | None:
    """The calibration of the reference's held-out rows; None when they are too few or hold
    a single class."""
    held_out = reference[reference[SPLIT_COLUMN].isin(HELD_OUT)].dropna(subset=[SCORE_COLUMN, label])
    if len(held_out) < MIN_CALIBRATION_ROWS or held_out[label].nunique() < 2:
        return None
    return Calibrator(held_out[SCORE_COLUMN].to_numpy(), held_out[label].astype(int).to_numpy())


def expected_roc_auc(scores: np.ndarray, probabilities: np.ndarray) -> float:
    """The area under the ROC curve of expected rates: at each distinct score threshold the
    rows at or above it add their probabilities to the expected true positives and the
    complements to the expected false positives. NaN when a class is expected to be absent."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    ranked, p = np.asarray(scores, dtype=float)[order], np.asarray(probabilities, dtype=float)[order]
    true_pos, false_pos = np.cumsum(p), np.cumsum(1.0 - p)
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    true_pos, false_pos = true_pos[last_of_tie], false_pos[last_of_tie]
    if len(p) == 0 or true_pos[-1] <= 0 or false_pos[-1] <= 0:
        return float("nan")
    tpr = np.r_[0.0, true_pos / true_pos[-1]]
    fpr = np.r_[0.0, false_pos / false_pos[-1]]
    return float(np.trapezoid(tpr, fpr))


def expected_accuracy(predicted: np.ndarray, probabilities: np.ndarray) -> float:
    """The mean probability that each served class is the true one."""
    positive = np.asarray(predicted).astype(int) == 1
    p = np.asarray(probabilities, dtype=float)
    return float(np.mean(np.where(positive, p, 1.0 - p))) if len(p) else float("nan")


def estimate_quality(
    uc: UseCase,
    calibration: Calibrator,
    scores: np.ndarray,
    predicted: np.ndarray,
    test_metrics: Mapping[str, float],
) -> EstimatedQuality:
    """The window's expected ROC AUC and accuracy from the champion's ``scores`` (positive
    class probabilities) and ``predicted`` (served classes) on the window's sample."""
    probabilities = calibration(scores)
    expected = {
        "roc_auc": lambda: expected_roc_auc(scores, probabilities),
        "accuracy": lambda: expected_accuracy(predicted, probabilities),
    }
    metrics = {name: expected[name]() for name in ESTIMATED_QUALITY_METRICS}
    primary = uc.training.primary_metric
    test_value = test_metrics.get(f"test_{primary}")
    value = metrics.get(primary)
    estimable = value is not None and test_value is not None and not np.isnan(value)
    return EstimatedQuality(
        metrics=metrics,
        primary_metric=primary,
        test_value=None if test_value is None else float(test_value),
        drop=float(test_value) - value if estimable else None,
        max_drop=uc.monitoring.quality_max_drop,
        rows=len(scores),
        calibration_rows=calibration.rows,
    )


def estimate_window(
    uc: UseCase,
    reference: pd.DataFrame,
    model: LoadedModel,
    current: pd.DataFrame,
    test_metrics: Mapping[str, float],
) -> EstimatedQuality | None:
    """The champion's estimated quality on the window's sample ``current``, calibrated on
    its stored ``reference``; None for a regressor, a model without probabilities, or a
    reference whose held-out rows cannot calibrate."""
    if uc.problem_type != "binary_classification" or model.predict_proba is None or current.empty:
        return None
    calibration = calibrator(reference, uc.label.column)
    if calibration is None:
        return None
    inputs = current[model.column_names]
    scores = np.asarray(model.predict_proba(inputs))[:, 1]
    return estimate_quality(uc, calibration, scores, np.asarray(model.predict(inputs)), test_metrics)
