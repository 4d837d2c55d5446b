"""The training DAG's steps as plain functions: each takes Params and references, returns
references. Every mapped task re-reads the training set at the recorded Delta versions,
so all candidates and the gate see exactly the same rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from esteira.config import Settings, get_settings
from esteira.orchestration.references import to_reference
from esteira.usecase import UseCase

log = logging.getLogger("esteira.training")

MIN_TRAINING_ROWS = 100


class TrainingDataError(RuntimeError):
    """The window holds too little labelled data to train on."""


def with_params(uc: UseCase, params: Mapping[str, Any]) -> UseCase:
    """The use case with a run's Params applied (seed, split, window)."""
    training = uc.training
    split = training.split.model_copy(
        update={
            key: params[key]
            for key in ("validation_fraction", "test_fraction")
            if params.get(key) is not None
        }
    )
    update: dict[str, Any] = {"split": split}
    for key in ("seed", "window_days"):
        if params.get(key) is not None:
            update[key] = params[key]
    return uc.model_copy(update={"training": training.model_copy(update=update)})


def experiment_name(uc: UseCase) -> str:
    return f"{uc.name}-training"


def _training_end(uc: UseCase, settings: Settings, params: Mapping, trigger: Mapping) -> dt.datetime:
    if params.get("training_end"):
        return dt.datetime.fromisoformat(params["training_end"])
    if trigger.get("end"):
        return dt.datetime.fromisoformat(str(trigger["end"]))
    from deltalake import DeltaTable

    from esteira.features.refresh import labels_table

    labels = DeltaTable(settings.table_uri(uc.name, labels_table(uc)))
    newest = labels.to_pyarrow_table(columns=[uc.timestamp])[uc.timestamp]
    if len(newest) == 0:
        raise TrainingDataError(f"no labels yet in {labels.table_uri}: run a feature refresh first")
    latest = pd.Timestamp(max(newest.to_pylist())).normalize() + pd.Timedelta(days=1)
    return latest.to_pydatetime()


def prepare_training(
    uc: UseCase, params: Mapping[str, Any], airflow: Mapping[str, Any], trigger: Mapping[str, Any]
) -> dict:
    """Fix the window and table versions, check there is enough data, open the parent run."""
    from esteira.features.training_set import build_training_set
    from esteira.training.tracking import start_parent_run

    settings = get_settings()
    uc = with_params(uc, params)
    end = _training_end(uc, settings, params, trigger)
    start = end - dt.timedelta(days=uc.training.window_days)
    frame, ref = build_training_set(uc, settings, start, end)
    if len(frame) < MIN_TRAINING_ROWS:
        raise TrainingDataError(
            f"only {len(frame)} labelled rows in [{start:%Y-%m-%d}, {end:%Y-%m-%d}) "
            f"(need {MIN_TRAINING_ROWS}): refresh more days or widen window_days"
        )
    parent = start_parent_run(uc, experiment_name(uc), ref, airflow)
    log.info("training set: %d rows, features v%s, labels v%s; parent run %s",
             len(frame), ref.version, ref.labels_version, parent)
    return {**to_reference(ref), "parent_run_id": parent}


def load_frame(uc: UseCase, training: Mapping[str, Any]) -> pd.DataFrame:
    from esteira.features.training_set import build_training_set

    frame, _ = build_training_set(
        uc,
        get_settings(),
        dt.datetime.fromisoformat(training["start"]),
        dt.datetime.fromisoformat(training["end"]),
        version=int(training["version"]),
        labels_version=int(training["labels_version"]),
    )
    return frame


def run_candidate(
    uc: UseCase,
    params: Mapping[str, Any],
    candidate: Mapping[str, Any],
    training: Mapping[str, Any],
    airflow: Mapping[str, Any],
) -> dict:
    from esteira.training.fit import train_candidate

    uc = with_params(uc, params)
    result = train_candidate(
        uc, candidate, load_frame(uc, training), _lineage(training), training["parent_run_id"], airflow
    )
    log.info("candidate %s: run %s, %s", result.name, result.run_id,
             ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items())))
    return result.to_dict()


def run_gate(
    uc: UseCase, params: Mapping[str, Any], best: Mapping[str, Any], training: Mapping[str, Any]
) -> dict:
    from esteira.evaluation.gate import describe, evaluate_gate
    from esteira.training.split import time_split

    uc = with_params(uc, params)
    test = time_split(uc, load_frame(uc, training)).test
    result = evaluate_gate(
        uc,
        best["run_id"],
        best["model_uri"],
        test,
        _lineage(training),
        training["parent_run_id"],
        mode=params.get("gate_mode") or None,
    )
    log.info("%s", describe(result))
    return result.to_dict()


def finish_training(
    uc: UseCase, best: Mapping[str, Any], gate: Mapping[str, Any], training: Mapping[str, Any]
) -> dict | None:
    """Register the challenger on a pass; None when the gate rejected the candidate."""
    from esteira.registry import transitions
    from esteira.training.tracking import finish_run

    if not gate["passed"]:
        finish_run(training["parent_run_id"])
        log.warning("rejected by the gate: %s", "; ".join(gate["reasons"]))
        return None
    version = transitions.register_challenger(uc, best["run_id"], best["model_uri"], _lineage(training), gate)
    finish_run(training["parent_run_id"])
    return {
        "model_name": uc.model_name,
        "version": version,
        "run_id": best["run_id"],
        "model_uri": f"models:/{uc.model_name}/{version}",
        "compared_champion": gate.get("champion_version"),
        "gate_verdict": gate["verdict"],
    }


def _lineage(training: Mapping[str, Any]) -> dict:
    return {k: v for k, v in training.items() if k != "parent_run_id"}
