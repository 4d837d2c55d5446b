"""PNG diagnostics of a fitted candidate, drawn on ``Figure`` objects (no pyplot state)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
)
from sklearn.pipeline import Pipeline


def classification_plots(model: Pipeline, features: pd.DataFrame, target: pd.Series) -> dict:
    y = target.astype(int).to_numpy()
    proba = model.predict_proba(features)[:, 1]
    figures = {}
    for name, draw in (
        ("roc_curve", lambda ax: RocCurveDisplay.from_predictions(y, proba, ax=ax)),
        ("precision_recall_curve", lambda ax: PrecisionRecallDisplay.from_predictions(y, proba, ax=ax)),
        (
            "confusion_matrix",
            lambda ax: ConfusionMatrixDisplay.from_predictions(
                y, (proba >= 0.5).astype(int), ax=ax, colorbar=False
            ),
        ),
    ):
        figure = Figure(figsize=(5, 4))
        draw(figure.subplots())
        figures[name] = figure
    return figures


def regression_plots(model: Pipeline, features: pd.DataFrame, target: pd.Series) -> dict:
    predicted = model.predict(features)
    figure = Figure(figsize=(5, 4))
    ax = figure.subplots()
    ax.scatter(predicted, target.to_numpy() - predicted, s=6, alpha=0.5)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual (actual - predicted)")
    ax.set_title("Residuals on the test set")
    return {"residuals": figure}


def feature_importance(
    model: Pipeline, features: pd.DataFrame, target: pd.Series, scoring: str, seed: int
) -> tuple[dict[str, float], Figure]:
    """Permutation importance on the raw feature columns: comparable across model families."""
    result = permutation_importance(
        model, features, target, scoring=scoring, n_repeats=3, random_state=seed, n_jobs=1
    )
    importance = dict(zip(features.columns, map(float, result.importances_mean), strict=True))
    order = np.argsort(result.importances_mean)
    figure = Figure(figsize=(6, 0.4 * len(order) + 1.2))
    ax = figure.subplots()
    ax.barh(np.asarray(features.columns)[order], result.importances_mean[order])
    ax.set_xlabel(f"mean drop in {scoring} when permuted")
    ax.set_title("Permutation feature importance (validation set)")
    figure.tight_layout()
    return importance, figure
