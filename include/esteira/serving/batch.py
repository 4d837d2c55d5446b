"""Batch scoring: the champion over one interval of the feature table, merged into ``predictions``.

Rows are keyed by (entity, event timestamp, model name, model version). A rerun recomputes the same
predictions and the merge then changes nothing: a matched row is rewritten only when its
prediction or probability differs, so ``scored_at`` and ``run_id`` keep the first scoring
that produced the current values.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from esteira.config import Settings
from esteira.serving.model_loader import LoadedModel, load_version, resolve_alias
from esteira.usecase import UseCase

PREDICTIONS_TABLE = "predictions"


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
    features = read_interval(settings.table_uri(uc.name, uc.features.table), uc, start, end)
    table_uri = settings.table_uri(uc.name, PREDICTIONS_TABLE)
    result = {"table_uri": table_uri, "rows": len(features), "model_version": version,
              "model_uri": model.uri}
    if features.empty:
        return {**result, "version": _table_version(table_uri)}
    scored = predictions_frame(uc, model, features, run_id)
    return {**result, "version": _merge(uc, table_uri, scored)}


def read_interval(table_uri: str, uc: UseCase, start: dt.datetime, end: dt.datetime):
    """Entity, timestamp and feature columns of the rows in ``[start, end)``, one per key."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    dataset = DeltaTable(table_uri).to_pyarrow_dataset()
    ts_type = dataset.schema.field(uc.timestamp).type
    inside = (ds.field(uc.timestamp) >= pa.scalar(start, type=ts_type)) & (
        ds.field(uc.timestamp) < pa.scalar(end, type=ts_type)
    )
    frame = dataset.to_table(
        columns=[uc.entity, uc.timestamp, *uc.feature_names], filter=inside
    ).to_pandas()
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
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    source = pa.Table.from_pandas(scored, preserve_index=False)
    if _table_version(table_uri) is None:
        write_deltalake(table_uri, source, mode="append")
        return DeltaTable(table_uri).version()
    table = DeltaTable(table_uri)
    keys = (uc.entity, uc.timestamp, "model_name", "model_version")
    (
        table.merge(
            source,
            predicate=" AND ".join(f"t.`{k}` = s.`{k}`" for k in keys),
            source_alias="s",
            target_alias="t",
        )
        .when_matched_update_all(
            predicate="(t.prediction IS DISTINCT FROM s.prediction) "
            "OR (t.probability IS DISTINCT FROM s.probability)"
        )
        .when_not_matched_insert_all()
        .execute()
    )
    return table.version()


def _table_version(table_uri: str) -> int | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table_uri).version()
    except TableNotFoundError:
        return None
