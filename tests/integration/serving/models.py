"""Small churn pipelines on synthetic rows, logged and registered the way training does."""

from __future__ import annotations

import numpy as np
import pandas as pd

from esteira.usecase import UseCase


def frame(uc: UseCase, rows: int, seed: int) -> pd.DataFrame:
    """Raw feature columns: categories as strings (some missing), the rest floats (some NaN)."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for feature in uc.features.definitions:
        if feature.type == "category":
            allowed = uc.schema_.columns[feature.source].allowed
            data[feature.name] = rng.choice(allowed, rows).astype(object)
        else:
            data[feature.name] = rng.gamma(2.0, 10.0, rows).round(2)
    out = pd.DataFrame(data)
    out.loc[::9, "device"] = None
    out.loc[::7, "session_minutes"] = np.nan
    return out


def train(uc: UseCase, seed: int, rows: int = 400, kind: str = "forest"):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    x = frame(uc, rows, seed)
    rng = np.random.default_rng(seed + 100)
    score = x["monthly_charges"] / 20 - x["tickets_30d_sum"] / 20 + (x["plan"] == "basic")
    y = (score + rng.normal(0, 0.5, rows) > score.median()).astype(int)
    categorical = [f.name for f in uc.features.definitions if f.type == "category"]
    numeric = [f.name for f in uc.features.definitions if f.type != "category"]
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("num", SimpleImputer(), numeric),
        ]
    )
    clf = (
        RandomForestClassifier(n_estimators=10, max_depth=6, random_state=seed)
        if kind == "forest"
        else LogisticRegression(max_iter=500)
    )
    return Pipeline([("pre", pre), ("clf", clf)]).fit(x, y), x


def train_family(uc: UseCase, family: str, seed: int, rows: int = 600, params: dict | None = None):
    """A candidate family's pipeline exactly as training builds it, on synthetic rows.

    ``uc.problem_type`` decides the target: churn-like labels or a charge-like number.
    """
    from esteira.training.candidates import build_pipeline

    x = frame(uc, rows, seed)
    rng = np.random.default_rng(seed + 100)
    if uc.problem_type == "regression":
        y = x["monthly_charges"] * 0.3 - x["tickets_30d_sum"] / 10 + rng.normal(0, 1, rows)
    else:
        score = x["monthly_charges"] / 20 - x["tickets_30d_sum"] / 20 + (x["plan"] == "basic")
        y = (score + rng.normal(0, 0.5, rows) > score.median()).astype(int)
    pipeline = build_pipeline(uc, {"name": family, "family": family, "params": params or {}}, seed)
    return pipeline.fit(x, y), x


def register(uc: UseCase, trained) -> str:
    """Log as training does (the probabilities flavor, signature, input example) and register.

    cloudpickle rather than training's skops: loading goes through the same sklearn flavor.
    """
    import mlflow
    from mlflow.models import infer_signature

    from esteira.serving import pyfunc_flavor

    pipeline, x = trained
    example = x.head(5)
    with mlflow.start_run():
        info = pyfunc_flavor.log_model(
            pipeline,
            name="model",
            signature=infer_signature(example, pipeline.predict(example)),
            input_example=example,
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "cloudpickle"],  # skips a slow inference subprocess
            registered_model_name=uc.model_name,
        )
    return str(info.registered_model_version)


def set_champion(uc: UseCase, version: str) -> None:
    from esteira import tracking

    tracking.client().set_registered_model_alias(uc.model_name, "champion", version)
