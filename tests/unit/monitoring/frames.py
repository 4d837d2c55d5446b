"""Seeded synthetic frames with the churn demo's feature columns, optionally shifted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from esteira.config import load_usecase
from esteira.usecase import ColumnDrift, UseCase

CHURN_YAML = Path(__file__).resolve().parents[3] / "include" / "usecases" / "churn.yaml"
SHIFTED = ("monthly_charges", "session_minutes", "device")


def churn_usecase(sample_size: int = 3000, **monitoring) -> UseCase:
    """The demo use case with a small sample, so a test takes a second (above 1,000 rows
    Evidently keeps its distance-based default methods)."""
    uc = load_usecase(CHURN_YAML)
    spec = uc.monitoring.model_copy(update={"sample_size": sample_size, **monitoring})
    return uc.model_copy(update={"monitoring": spec})


def with_column_drift(uc: UseCase, **columns: ColumnDrift) -> UseCase:
    spec = uc.monitoring.model_copy(update={"columns": columns})
    return uc.model_copy(update={"monitoring": spec})


def churn_frame(rows: int, seed: int, shifted: tuple[str, ...] = ()) -> pd.DataFrame:
    """Feature rows plus the label ``churned``; ``shifted`` columns move as the demo
    generator's drift switch moves them (x1.6, x0.5, half the rows to 'tv')."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "plan": rng.choice(["basic", "standard", "premium"], rows, p=[0.5, 0.3, 0.2]),
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "device": rng.choice(
                np.array(["mobile", "desktop", "tv", None], dtype=object),
                rows,
                p=[0.5, 0.3, 0.15, 0.05],
            ),
            "monthly_charges": rng.gamma(4.0, 15.0, rows),
            "session_minutes": np.where(
                rng.random(rows) < 0.03, np.nan, rng.exponential(30.0, rows)
            ),
            "minutes_7d_mean": rng.normal(30.0, 8.0, rows),
            "tickets_30d_sum": rng.poisson(1.2, rows).astype(float),
            "payment_delay_30d_max": rng.poisson(3.0, rows).astype(float),
            "events_7d_count": rng.poisson(4.0, rows).astype(float) + 1,
            "churned": (rng.random(rows) < 0.15).astype(int),
        }
    )
    if "monthly_charges" in shifted:
        frame["monthly_charges"] *= 1.6
    if "session_minutes" in shifted:
        frame["session_minutes"] *= 0.5
    if "device" in shifted:
        frame.loc[rng.random(rows) < 0.5, "device"] = "tv"
    return frame


def labeled_predictions(rows: int, seed: int, skill: float) -> pd.DataFrame:
    """Labels and positive-class probabilities; ``skill`` 0 is a coin, 1 separates well."""
    rng = np.random.default_rng(seed)
    label = (rng.random(rows) < 0.3).astype(int)
    score = skill * label + rng.normal(0.0, 0.5, rows)
    return pd.DataFrame({"churned": label, "prediction": 1 / (1 + np.exp(-3 * (score - 0.5)))})
