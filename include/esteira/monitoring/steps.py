"""The drift-monitoring DAG's step: gather the reference, the window and its labels for the
champion, then hand them to `monitor.run_monitoring`."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from esteira.config import Settings, get_settings
from esteira.usecase import UseCase

log = logging.getLogger("esteira.monitoring")


def _window_rows(
    uri: str, timestamp: str, start: dt.datetime, end: dt.datetime, columns=None
) -> pd.DataFrame:
    from deltalake import DeltaTable

    try:
        table = DeltaTable(uri)
    except Exception:  # noqa: BLE001 - a table that does not exist yet holds no rows
        return pd.DataFrame(columns=columns or [])
    filters = [(timestamp, ">=", pd.Timestamp(start)), (timestamp, "<", pd.Timestamp(end))]
    return table.to_pandas(columns=columns, filters=filters)


def _reference(uc: UseCase, settings: Settings, tags: Mapping[str, str]) -> pd.DataFrame:
    """The champion's training data, read at the Delta versions in its lineage tags."""
    from esteira.features.training_set import build_training_set

    lineage = json.loads(tags["lineage"])
    frame, _ = build_training_set(
        uc,
        settings,
        dt.datetime.fromisoformat(lineage["start"]),
        dt.datetime.fromisoformat(lineage["end"]),
        version=int(lineage["version"]),
        labels_version=int(lineage["labels_version"]),
    )
    return frame[uc.feature_names]


def _labelled_predictions(uc, settings, version: int, start, end) -> pd.DataFrame | None:
    from esteira.features.refresh import labels_table

    key = [uc.entity, uc.timestamp]
    labels = _window_rows(settings.table_uri(uc.name, labels_table(uc)), uc.timestamp, start, end)
    predictions = _window_rows(settings.table_uri(uc.name, "predictions"), uc.timestamp, start, end)
    if labels.empty or predictions.empty:
        return None
    predictions = predictions[predictions["model_version"].astype(str) == str(version)]
    score = "probability" if uc.problem_type == "binary_classification" else "prediction"
    joined = labels[[*key, uc.label.column]].merge(
        predictions[[*key, score]].rename(columns={score: "prediction"}), on=key
    )
    return joined if len(joined) else None


def monitor_interval(
    uc: UseCase, params: Mapping[str, Any], context: Mapping[str, Any], run_id: str
) -> dict:
    from mlflow import MlflowClient

    from esteira.monitoring.monitor import run_monitoring
    from esteira.orchestration.interval import interval_or_latest
    from esteira.registry.transitions import get_alias_version
    from esteira.serving.inference_log import read_inference_log

    settings = get_settings()
    features_uri = settings.table_uri(uc.name, uc.features.table)
    first, last = interval_or_latest(
        dict(params), dict(context), features_uri, uc.timestamp, uc.monitoring.window_days
    )
    start, end = dt.datetime.combine(first, dt.time()), dt.datetime.combine(last, dt.time())
    version = get_alias_version(uc, "champion")
    if version is None:
        return {
            "retrain": False,
            "reason": "no champion yet: nothing to monitor",
            "window_end": last.isoformat(),
        }
    client = MlflowClient()
    model = client.get_model_version(uc.model_name, str(version))
    reference = _reference(uc, settings, model.tags)
    scored = _window_rows(features_uri, uc.timestamp, start, end, [*uc.feature_names])
    served = read_inference_log(settings, uc, start, end)
    current = (
        pd.concat([scored, served[uc.feature_names]], ignore_index=True) if len(served) else scored
    )
    if current.empty:
        return {
            "retrain": False,
            "reason": f"no rows in [{first}, {last})",
            "window_end": last.isoformat(),
        }
    metrics = client.get_run(model.run_id).data.metrics
    outcome = run_monitoring(
        uc,
        settings,
        reference,
        current,
        start,
        end,
        str(version),
        {k: v for k, v in metrics.items() if k.startswith("test_")},
        _labelled_predictions(uc, settings, version, start, end),
        run_id,
    )
    drift = outcome.drift
    log.info(
        "window [%s, %s), champion v%s: drift share %.2f (threshold %.2f), drifted %s; %s",
        first,
        last,
        version,
        drift.drift_share,
        drift.drift_share_threshold,
        list(drift.drifted_columns) or "none",
        outcome.decision.reason,
    )
    log.info("Evidently report: %s", outcome.report.artifact_uri)
    return {
        "retrain": outcome.decision.retrain,
        "reason": outcome.decision.reason,
        "window_start": first.isoformat(),
        "window_end": last.isoformat(),
        "model_version": version,
        "drift_share": drift.drift_share,
        "drifted_columns": list(drift.drifted_columns),
        "report_uri": outcome.report.artifact_uri,
        "report_run_id": outcome.report.run_id,
    }
