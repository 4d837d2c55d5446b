"""A month-grain panel (persons observed once a month, the wage a target in the same rows)
and its rows written as the files, Delta table and database each source kind reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from esteira.config import get_settings
from esteira.usecase import UseCase

MONTHS = pd.period_range("2024-01", "2025-12", freq="M")


def panel_usecase(source: dict, **overrides) -> UseCase:
    spec = {
        "name": "panel",
        "problem_type": "regression",
        "entity": "person_id",
        "timestamp": "period",
        "grain": "month",
        "start_date": "2024-01-01",
        "source": source,
        "schema": {"columns": {
            "person_id": {"type": "int", "nullable": False, "min": 1},
            "period": {"type": "timestamp", "nullable": False},
            "sector": {"type": "category", "nullable": False, "allowed": ["a", "b", "c"]},
            "hours": {"type": "float", "nullable": True, "min": 0, "max": 100},
            "wage": {"type": "float", "nullable": True, "min": 0},
        }, "max_bad_share": 0.5},
        "features": {"table": "panel_features", "definitions": [
            {"name": "sector", "function": "identity", "source": "sector", "type": "category"},
            {"name": "hours", "function": "identity", "source": "hours"},
            {"name": "wage_prev", "function": "lag", "source": "wage", "window": "1 periods"},
            {"name": "hours_3m_before", "function": "rolling_mean", "source": "hours",
             "window": "3 periods", "closed": "left"},
        ]},
        "label": {"column": "wage", "delay": "0 periods"},
        "training": {"primary_metric": "rmse", "greater_is_better": False,
                     "candidates": [{"family": "ridge"}]},
        "gate": {"thresholds": [{"metric": "rmse", "greater_is_better": False}]},
    }
    return UseCase.model_validate({**spec, **overrides})


def panel_rows(persons: int = 12, seed: int = 3) -> pd.DataFrame:
    """One row per person and month, ``period`` as 'YYYY-MM'; two bad rows at the end."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        [(p, str(m)) for p in range(1, persons + 1) for m in MONTHS], columns=["person_id", "period"]
    )
    frame["sector"] = rng.choice(["a", "b", "c"], len(frame))
    frame["hours"] = rng.uniform(10, 60, len(frame)).round(1)
    frame["wage"] = (frame["hours"] * 20 + rng.normal(0, 50, len(frame))).clip(0).round(2)
    bad = pd.DataFrame({"person_id": [99, 98], "period": ["2024-05", "2024-13"], "sector": ["a", "a"],
                        "hours": [500.0, 20.0], "wage": [1.0, 1.0]})
    return pd.concat([frame, bad], ignore_index=True)


def months(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    """The good rows of ``frame`` stamped in [start, end) (months as 'YYYY-MM')."""
    return frame[(frame["period"] >= start) & (frame["period"] < end) & (frame["person_id"] < 90)]


@pytest.fixture
def settings(esteira_home, monkeypatch, tmp_path):
    folder = tmp_path / "usecases"
    folder.mkdir()
    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(folder))
    return get_settings()


@pytest.fixture
def rows() -> pd.DataFrame:
    return panel_rows()
