"""The ``monitoring`` Delta table: one row per (window, model version), the time series a
dashboard reads and the history the retraining rule decides on.

Rows are merged on (window_start, model_version), so rerunning a window replaces its row.
Lists and per-column details are JSON strings: they read the same from pandas, DuckDB
and Spark.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa

from esteira import tables
from esteira.config import Settings
from esteira.usecase import UseCase

_KEYS = ("window_start", "model_version")

SCHEMA = pa.schema(
    [
        ("window_start", pa.timestamp("us")),
        ("window_end", pa.timestamp("us")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("run_label", pa.string()),
        ("reference_rows", pa.int64()),
        ("reference_sampled", pa.int64()),
        ("current_rows", pa.int64()),
        ("current_sampled", pa.int64()),
        ("labeled_rows", pa.int64()),
        ("drift_share", pa.float64()),
        ("drift_share_threshold", pa.float64()),
        ("dataset_drift", pa.bool_()),
        ("drifted_columns", pa.string()),
        ("column_scores", pa.string()),
        ("quality_metric", pa.string()),
        ("quality_value", pa.float64()),
        ("quality_test_value", pa.float64()),
        ("quality_drop", pa.float64()),
        ("quality_metrics", pa.string()),
        ("estimated_quality_metric", pa.string()),
        ("estimated_quality_value", pa.float64()),
        ("estimated_quality_drop", pa.float64()),
        ("estimated_quality_metrics", pa.string()),
        ("drift_breach", pa.bool_()),
        ("quality_breach", pa.bool_()),
        ("estimated_quality_breach", pa.bool_()),
        ("breach", pa.bool_()),
        ("retrain", pa.bool_()),
        ("retrain_reason", pa.string()),
        ("online_skew_checked", pa.int64()),  # null: no online store, or it could not be read
        ("online_skew_mismatched", pa.int64()),
        ("report_run_id", pa.string()),
        ("report_uri", pa.string()),
    ]
)


def write_result(settings: Settings, uc: UseCase, row: Mapping[str, Any]) -> int:
    """Insert or replace the row of its (window_start, model_version); returns the Delta version.

    Raises ValueError when the row's keys differ from the table's columns.
    """
    if set(row) != set(SCHEMA.names):
        missing = sorted(set(SCHEMA.names) - set(row))
        extra = sorted(set(row) - set(SCHEMA.names))
        raise ValueError(f"monitoring row: missing columns {missing}, unknown columns {extra}")
    data = pa.Table.from_pylist([{name: row[name] for name in SCHEMA.names}], schema=SCHEMA)
    uri = tables.table_uri(settings, uc, tables.MONITORING)
    if not tables.exists(uri):
        info = tables.TableInfo(
            name=tables.table_name(uc, tables.MONITORING), description=f"{uc.name} monitoring",
            keys=list(_KEYS),
        )
        return tables.append(uri, data, info)
    _add_new_columns(uri)
    return tables.merge(uri, data, _KEYS, SCHEMA, None)["version"]


def _add_new_columns(uri: str) -> None:
    """Add the columns a table written by an older release lacks (null in its old rows): a
    merge would silently drop them. It belongs in tables.py once the seam evolves schemas."""
    from deltalake import Field

    present = set(tables.arrow_schema(uri).names)
    missing = [Field.from_arrow(field) for field in SCHEMA if field.name not in present]
    if missing:
        tables.open_table(uri).alter.add_columns(missing)


def read_history(settings: Settings, uc: UseCase) -> pd.DataFrame:
    """All rows ordered by window and model version; an empty frame with the table's
    columns when nothing was recorded yet."""
    uri = tables.table_uri(settings, uc, tables.MONITORING)
    if not tables.exists(uri):
        return SCHEMA.empty_table().to_pandas()
    frame = tables.read_table(uri)
    return frame.sort_values(["window_end", "model_version"], ignore_index=True)
