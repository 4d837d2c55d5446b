"""Small deterministic training sets for the churn schema and a regression use case.

They stand in for the feature store's output (entity, timestamp, features, label), with
missing values and categories as strings like the real thing, and a signal that tree
models capture better than linear ones, so "stronger" and "weaker" candidates exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from deltalake import DeltaTable, write_deltalake

from esteira.config import load_usecase
from esteira.usecase import UseCase

_REPO = Path(__file__).resolve().parents[3]


def churn_usecase() -> UseCase:
    return load_usecase(_REPO / "include" / "usecases" / "churn.yaml")


def demand_usecase() -> UseCase:
    return UseCase.model_validate(
        {
            "name": "demand",
            "problem_type": "regression",
            "entity": "store_id",
            "timestamp": "day",
            "source": {"landing": "demand"},
            "schema": {
                "columns": {
                    "store_id": {"type": "int"},
                    "day": {"type": "timestamp"},
                    "price": {"type": "float"},
                    "promo": {"type": "int"},
                    "weekday": {"type": "category"},
                    "temperature": {"type": "float"},
                }
            },
            "features": {
                "table": "demand_features",
                "definitions": [
                    {"name": "price", "function": "identity", "source": "price"},
                    {"name": "promo", "function": "identity", "source": "promo", "type": "int"},
                    {"name": "weekday", "function": "identity", "source": "weekday", "type": "category"},
                    {"name": "temperature", "function": "identity", "source": "temperature"},
                ],
            },
            "label": {"column": "units"},
            "training": {
                "primary_metric": "rmse",
                "greater_is_better": False,
                "seed": 11,
                "split": {"validation_fraction": 0.2, "test_fraction": 0.2},
                "candidates": [
                    {"family": "ridge", "params": {"alpha": [1.0]}},
                    {"family": "random_forest_regressor", "params": {"n_estimators": [30], "max_depth": [6]}},
                    {"family": "hist_gradient_boosting_regressor", "params": {"max_iter": [60]}},
                ],
            },
            "gate": {
                "thresholds": [
                    {"metric": "rmse", "greater_is_better": False, "threshold": 100.0},
                    {"metric": "r2", "greater_is_better": True, "min_absolute_change": 0.01},
                ]
            },
        }
    )


def _times(rng: np.random.Generator, rows: int, days: int) -> pd.Series:
    start = pd.Timestamp("2026-01-01")
    offsets = rng.integers(0, days * 24 * 60, size=rows)
    return pd.Series(start + pd.to_timedelta(offsets, unit="min")).astype("datetime64[us]")


def churn_frame(uc: UseCase, rows: int = 800, days: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "standard", "premium"], size=rows)
    device = rng.choice(["mobile", "desktop", "tv", None], size=rows, p=[0.4, 0.3, 0.2, 0.1])
    delay = rng.integers(0, 60, size=rows).astype(float)
    tickets = rng.poisson(2, size=rows).astype(float)
    minutes = rng.gamma(2.0, 30.0, size=rows)
    minutes[rng.random(rows) < 0.05] = np.nan
    # Non-linear: churn when payments are late AND tickets pile up, or basic plan on tv.
    logit = (
        3.0 * ((delay > 30) & (tickets > 2))
        + 2.0 * ((plan == "basic") & (device == "tv"))
        - 1.5
        + rng.normal(0, 0.7, size=rows)
    )
    frame = pd.DataFrame(
        {
            uc.entity: rng.integers(1, 300, size=rows),
            uc.timestamp: _times(rng, rows, days),
            "plan": plan,
            "region": rng.choice(["north", "south", "east", "west"], size=rows),
            "device": device,
            "monthly_charges": rng.uniform(10, 120, size=rows).round(2),
            "session_minutes": minutes,
            "minutes_7d_mean": np.nan_to_num(minutes, nan=40.0) * rng.uniform(0.8, 1.2, size=rows),
            "tickets_30d_sum": tickets,
            "payment_delay_30d_max": delay,
            "events_7d_count": rng.integers(1, 15, size=rows).astype(float),
            uc.label.column: (logit > 0).astype(int),
        }
    )
    return frame[[uc.entity, uc.timestamp, *uc.feature_names, uc.label.column]]


def demand_frame(uc: UseCase, rows: int = 600, days: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    price = rng.uniform(1, 10, size=rows)
    promo = rng.integers(0, 2, size=rows)
    weekday = rng.choice(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], size=rows)
    temperature = rng.normal(20, 6, size=rows)
    units = (
        50
        - 3 * price
        + 15 * promo * (price < 5)
        + 10 * np.isin(weekday, ["sat", "sun"])
        + 0.05 * (temperature - 20) ** 2
        + rng.normal(0, 2, size=rows)
    )
    frame = pd.DataFrame(
        {
            uc.entity: rng.integers(1, 40, size=rows),
            uc.timestamp: _times(rng, rows, days),
            "price": price,
            "promo": promo,
            "weekday": weekday,
            "temperature": temperature,
            uc.label.column: units,
        }
    )
    return frame[[uc.entity, uc.timestamp, *uc.feature_names, uc.label.column]]


def write_table(frame: pd.DataFrame, uri: str, mode: str = "overwrite") -> int:
    """Write the frame as a Delta table (the stand-in feature table); returns its version."""
    write_deltalake(uri, frame, mode=mode)
    return DeltaTable(uri).version()


def read_table(uri: str, version: int) -> pd.DataFrame:
    return DeltaTable(uri, version=version).to_pandas()
