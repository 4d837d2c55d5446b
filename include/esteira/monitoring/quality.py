"""Model quality on a window whose labels have arrived, against the model's test metrics.

The labeled frame holds the true label (``uc.label.column``) and the model's output in
``PREDICTION_COLUMN``: the positive-class probability for binary classification, the
predicted value for regression. The breach is judged on the use case's primary metric
(``training.primary_metric``): its drop from the recorded ``test_<metric>`` (a fall for
roc_auc or r2, a rise for log_loss or rmse) must not exceed ``monitoring.quality_max_drop``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from esteira.monitoring.sampling import Sample, sample_frame
from esteira.usecase import UseCase

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

PREDICTION_COLUMN = "prediction"

# metric name (as in the model's test_<name> metrics) -> (Evidently metric class, greater is better)
_CLASSIFICATION = {
    "roc_auc": ("RocAuc", True),
    "log_loss": ("LogLoss", False),
    "accuracy": ("Accuracy", True),
    "f1": ("F1Score", True),
    "precision": ("Precision", True),
    "recall": ("Recall", True),
}
_REGRESSION = {
    "rmse": ("RMSE", False),
    "mae": ("MAE", False),
    "r2": ("R2Score", True),
}


@dataclass(frozen=True)
class QualityResult:
    metrics: Mapping[str, float]
    test_metrics: Mapping[str, float]
    drops: Mapping[str, float]
    primary_metric: str
    drop: float
    max_drop: float
    breach: bool
    rows: int
    sampled_rows: int
    snapshot: Snapshot = field(compare=False, repr=False)


def metric_catalog(uc: UseCase) -> dict[str, tuple[str, bool]]:
    return _CLASSIFICATION if uc.problem_type == "binary_classification" else _REGRESSION


def compute_quality(
    labeled: pd.DataFrame | Sample, uc: UseCase, test_metrics: Mapping[str, float]
) -> QualityResult | None:
    """Quality of the window's predictions; None when there is nothing to judge (no labeled
    rows, or a single class for a classifier). A Sample's ``source_rows`` is reported as
    the window's labeled rows.

    Raises ValueError when the primary metric is unsupported or missing from ``test_metrics``,
    or a column is missing.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently import metrics as ev

    catalog = metric_catalog(uc)
    primary = uc.training.primary_metric
    if primary not in catalog:
        raise ValueError(
            f"training.primary_metric '{primary}' cannot be monitored; use one of {sorted(catalog)}"
        )
    if f"test_{primary}" not in test_metrics:
        raise ValueError(f"the model's test metrics have no 'test_{primary}'")
    label = uc.label.column
    given = labeled.frame if isinstance(labeled, Sample) else labeled
    missing = [c for c in (label, PREDICTION_COLUMN) if c not in given.columns]
    if missing:
        raise ValueError(f"labeled predictions lack the columns {missing}")
    rows = given[[label, PREDICTION_COLUMN]].dropna()
    classifier = uc.problem_type == "binary_classification"
    if rows.empty or (classifier and rows[label].nunique() < 2):
        return None
    stratify = label if classifier else None
    sample = sample_frame(rows, uc.monitoring.sample_size, uc.training.seed, stratify_by=stratify)
    frame = sample.frame.astype({label: "int64" if classifier else "float64"})
    task: Any = (
        BinaryClassification(target=label, prediction_probas=PREDICTION_COLUMN)
        if classifier
        else Regression(target=label, prediction=PREDICTION_COLUMN)
    )
    definition = (
        DataDefinition(classification=[task]) if classifier else DataDefinition(regression=[task])
    )
    names = list(catalog)
    snapshot = Report([getattr(ev, catalog[name][0])() for name in names]).run(
        Dataset.from_pandas(frame, data_definition=definition), None
    )
    values = {
        name: _number(metric["value"])
        for name, metric in zip(names, snapshot.dict()["metrics"], strict=True)
    }
    reference = {
        name: float(test_metrics[f"test_{name}"])
        for name in names
        if f"test_{name}" in test_metrics
    }
    drops = {
        name: (ref - values[name]) if catalog[name][1] else (values[name] - ref)
        for name, ref in reference.items()
    }
    max_drop = uc.monitoring.quality_max_drop
    return QualityResult(
        metrics=values,
        test_metrics=reference,
        drops=drops,
        primary_metric=primary,
        drop=drops[primary],
        max_drop=max_drop,
        breach=drops[primary] > max_drop,
        rows=labeled.source_rows if isinstance(labeled, Sample) else sample.source_rows,
        sampled_rows=sample.sampled_rows,
        snapshot=snapshot,
    )


def _number(value: Any) -> float:
    """Evidently reports MAE as mean and std; the others as a single value."""
    return float(value["mean"] if isinstance(value, dict) else value)
