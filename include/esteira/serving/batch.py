"""Batch scoring: the champion over one interval of the feature table, merged into ``predictions``.

Rows are keyed by (entity, event timestamp, model name, model version). A rerun recomputes the same
predictions and the merge then changes nothing: a matched row is rewritten only when its
prediction or probability differs, so ``scored_at`` and ``run_id`` keep the first scoring
that produced the current values.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from esteira import tables
from esteira.config import Settings
from esteira.serving.model_loader import LoadedModel, load_version, resolve_alias
from esteira.usecase import UseCase

# A matched row is rewritten only when its scores changed, so a rerun keeps its lineage.
_CHANGED = (
    "(t.prediction IS DISTINCT FROM s.prediction) OR (t.probability IS DISTINCT FROM s.probability)"
)


class NoChampionError(LookupError):
    """The registered model has no ``champion`` alias: nothing to score with."""


def score_batch(
    uc: UseCase, settings: Settings, start: dt.datetime, end: dt.datetime, run_id: str
) -> dict[str, Any]:
    """Score the feature rows with ``start <= timestamp < end`` (naive UTC) with the champion.

    Returns ``{table_uri, version, rows, model_version, model_uri}`` (``version``: the
    predictions table's Delta version, None if it does not exist yet and nothing was scored).
    """
    version = resolve_alias(settings, uc.model_name, "champion")
    if version is None:
        raise NoChampionError(
            f"registered model '{uc.model_name}' has no 'champion' alias; promote a model first"
        )
    model = load_version(settings, uc.model_name, version)
    features = _features(tables.table_uri(settings, uc, tables.FEATURES), uc, start, end)
    table_uri = tables.table_uri(settings, uc, tables.PREDICTIONS)
    result = {"table_uri": table_uri, "rows": len(features), "model_version": version,
              "model_uri": model.uri}
    if features.empty:
        return {**result, "version": tables.current_version(table_uri)}
    scored = predictions_frame(uc, model, features, run_id)
    return {**result, "version": _merge(uc, table_uri, scored)}


def _features(table_uri: str, uc: UseCase, start: dt.datetime, end: dt.datetime):
    """Entity, timestamp and feature columns of the rows in ``[start, end)``, one per key."""
    frame = tables.read_interval(
        table_uri, uc.timestamp, start, end, [uc.entity, uc.timestamp, *uc.feature_names]
    )
    return (
        frame.drop_duplicates([uc.entity, uc.timestamp], keep="last")
        .sort_values([uc.timestamp, uc.entity])
        .reset_index(drop=True)
    )


def predictions_frame(uc: UseCase, model: LoadedModel, features, run_id: str):
    """The rows to merge: keys, prediction, probability (binary classifiers), lineage."""
    import numpy as np
    import pandas as pd

    missing = [c for c in model.column_names if c not in features.columns]
    if missing:
        raise ValueError(
            f"{model.uri} needs column(s) {', '.join(missing)} that the feature table "
            f"'{uc.features.table}' does not have"
        )
    inputs = features[model.column_names]
    prediction = np.asarray(model.predict(inputs))
    probability = np.full(len(features), np.nan)
    if uc.problem_type == "binary_classification" and model.predict_proba is not None:
        probability = np.asarray(model.predict_proba(inputs))[:, 1].astype(np.float64)
    scored_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return pd.DataFrame(
        {
            uc.entity: features[uc.entity].to_numpy(),
            uc.timestamp: features[uc.timestamp].to_numpy(),
            "prediction": prediction.astype(np.float64)
            if prediction.dtype.kind in "biuf"
            else prediction.astype(str),
            "probability": probability,
            "model_name": model.name,
            "model_version": model.version,
            "run_id": run_id,
            "scored_at": pd.Series([scored_at] * len(features), dtype="datetime64[us]"),
        }
    )


def _merge(uc: UseCase, table_uri: str, scored) -> int:
    """Upsert by (entity, timestamp, model name, model version); returns the Delta version."""
    import pyarrow as pa

    if not tables.exists(table_uri):
        return tables.append(table_uri, scored)
    keys = (uc.entity, uc.timestamp, "model_name", "model_version")
    schema = pa.Schema.from_pandas(scored, preserve_index=False)
    return tables.merge(table_uri, scored, keys, schema, None, update_when=_CHANGED)["version"]
