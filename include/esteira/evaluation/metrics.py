"""Metrics per problem type, under one naming used by runs, selection and the gate.

The names are read by the Esteira page and the CLI, which must stay cheap: numpy and
scikit-learn are imported only where a model is scored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

CLASSIFICATION = ("roc_auc", "log_loss", "f1", "precision", "recall", "accuracy")
REGRESSION = ("rmse", "mae", "r2")

# Our names -> the names of mlflow.models.evaluate's default evaluator (used by the gate).
MLFLOW_NAMES = {
    "roc_auc": "roc_auc",
    "log_loss": "log_loss",
    "f1": "f1_score",
    "precision": "precision_score",
    "recall": "recall_score",
    "accuracy": "accuracy_score",
    "rmse": "root_mean_squared_error",
    "mae": "mean_absolute_error",
    "r2": "r2_score",
}
GREATER_IS_BETTER = {
    "roc_auc": True,
    "log_loss": False,
    "f1": True,
    "precision": True,
    "recall": True,
    "accuracy": True,
    "rmse": False,
    "mae": False,
    "r2": True,
}


def metric_names(problem_type: str) -> tuple[str, ...]:
    return CLASSIFICATION if problem_type == "binary_classification" else REGRESSION


def score(problem_type: str, model: Pipeline, features: pd.DataFrame, target: pd.Series) -> dict:
    """All metrics of ``problem_type`` for a fitted model on one split, as plain floats."""
    import numpy as np
    from sklearn import metrics as skm

    if problem_type == "binary_classification":
        y = target.astype(int).to_numpy()
        proba = model.predict_proba(features)[:, 1]
        predicted = (proba >= 0.5).astype(int)
        both_classes = len(np.unique(y)) == 2
        return {
            "roc_auc": float(skm.roc_auc_score(y, proba)) if both_classes else float("nan"),
            "log_loss": float(skm.log_loss(y, proba, labels=[0, 1])),
            "f1": float(skm.f1_score(y, predicted, zero_division=0)),
            "precision": float(skm.precision_score(y, predicted, zero_division=0)),
            "recall": float(skm.recall_score(y, predicted, zero_division=0)),
            "accuracy": float(skm.accuracy_score(y, predicted)),
        }
    y = target.astype(float).to_numpy()
    predicted = model.predict(features)
    return {
        "rmse": float(skm.root_mean_squared_error(y, predicted)),
        "mae": float(skm.mean_absolute_error(y, predicted)),
        "r2": float(skm.r2_score(y, predicted)),
    }
