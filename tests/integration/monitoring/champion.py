"""A champion trained, gated, registered and promoted by the training stage's own functions
on synthetic feature and label tables whose labels follow a known P(label | features), so
that a covariate shift changes the model's quality in a way the labels later confirm."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from esteira import tables
from esteira.config import Settings
from esteira.usecase import CandidateSpec, RegistrySpec, UseCase
from tests.unit.monitoring.frames import churn_frame, churn_usecase

TRAINING_START = dt.date(2026, 1, 1)
TRAINING_DAYS = 30
FIRST_WINDOW = TRAINING_START + dt.timedelta(days=TRAINING_DAYS)


def usecase(model_name: str, sample_size: int, quality: str = "both") -> UseCase:
    """The churn use case with logistic regression only, its own model name, a 30-day
    training window ending at FIRST_WINDOW and ``retraining.quality``."""
    uc = churn_usecase(sample_size=sample_size)
    training = uc.training.model_copy(
        update={"window_days": TRAINING_DAYS,
                "candidates": [CandidateSpec(family="logistic_regression", params={"C": [1.0]})]}
    )
    return uc.model_copy(update={
        "training": training,
        "registry": RegistrySpec(model_name=model_name),
        "retraining": uc.retraining.model_copy(update={"quality": quality}),
    })


def churn_probability(frame: pd.DataFrame) -> np.ndarray:
    """The true P(churned | features): higher charges, more tickets and the basic plan churn."""
    logit = (
        1.6 * (frame["monthly_charges"] - 60.0) / 30.0
        + 0.9 * (frame["tickets_30d_sum"] - 1.2)
        + 0.8 * (frame["plan"] == "basic")
        - 1.3
    )
    return 1.0 / (1.0 + np.exp(-logit.to_numpy()))


def window_rows(day: dt.date, rows: int, seed: int, kind: str = "same") -> tuple[pd.DataFrame, pd.DataFrame]:
    """One day of feature rows and their labels (one entity per row).

    ``kind``: ``same`` as the training data; ``shift`` moves charges up (covariate shift:
    the relation of label to features is unchanged, the model stays as good); ``flat``
    squeezes charges and tickets, the model's two best signals, so its quality drops for real.
    """
    rng = np.random.default_rng(seed)
    frame = churn_frame(rows, seed=seed).drop(columns="churned")
    if kind == "shift":
        frame["monthly_charges"] *= 1.4
    elif kind == "flat":
        frame["monthly_charges"] = rng.normal(60.0, 3.0, rows)
        frame["tickets_30d_sum"] = 1.0
    stamps = pd.Timestamp(day) + pd.to_timedelta(np.sort(rng.integers(0, 86_400, rows)), unit="s")
    keys = pd.DataFrame({"customer_id": seed * 1_000_000 + np.arange(rows), "event_ts": stamps.astype("datetime64[us]")})
    features = pd.concat([keys, frame], axis=1)
    labels = keys.assign(churned=(rng.random(rows) < churn_probability(frame)).astype("int64"))
    return features, labels


def write(uc: UseCase, settings: Settings, kind: str, frame: pd.DataFrame) -> None:
    from esteira.features.refresh import feature_schema, labels_schema

    schema = feature_schema(uc) if kind == tables.FEATURES else labels_schema(uc)
    info = tables.TableInfo(name=tables.table_name(uc, kind), description=f"test {kind}", keys=["customer_id", "event_ts"])
    tables.append(tables.table_uri(settings, uc, kind), frame, info, schema)


def train_champion(uc: UseCase, settings: Settings, rows_per_day: int = 300) -> int:
    """Write TRAINING_DAYS of labelled rows, then train, gate, register and promote through
    the stage functions the training DAG calls; returns the champion's version."""
    from esteira.registry import transitions
    from esteira.stages import model_training as stage
    from esteira.training.candidates import expand_candidates

    days = [TRAINING_START + dt.timedelta(days=d) for d in range(TRAINING_DAYS)]
    parts = [window_rows(day, rows_per_day, seed=10 + i) for i, day in enumerate(days)]
    write(uc, settings, tables.FEATURES, pd.concat([f for f, _ in parts], ignore_index=True))
    write(uc, settings, tables.LABELS, pd.concat([labels for _, labels in parts], ignore_index=True))
    options = stage.TrainingOptions(training_end=dt.datetime.combine(FIRST_WINDOW, dt.time()))
    airflow = {"dag_id": uc.dag_id("model_training"), "run_id": f"{uc.model_name}-train", "try_number": 1}
    training = stage.prepare_training(uc, options, stage.TrainingTrigger(), airflow)
    results = [stage.run_candidate(uc, options, c, training, airflow) for c in expand_candidates(uc)]
    best = stage.select_best(uc, results)
    gate = stage.run_gate(uc, options, best, training)
    registered = stage.register_challenger(uc, best, gate, training)
    version = int(registered["version"])
    transitions.promote(uc, version, None, "tests", "the champion monitoring is tested against")
    return version
