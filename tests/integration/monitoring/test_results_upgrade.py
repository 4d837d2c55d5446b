"""A monitoring table written before the estimated-quality columns existed gains them on
the next window instead of silently dropping the estimate."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from esteira import tables
from esteira.config import get_settings
from esteira.monitoring.results import SCHEMA, read_history, write_result
from tests.unit.monitoring.frames import churn_usecase

pytestmark = pytest.mark.integration

_NEW = ("estimated_quality_metric", "estimated_quality_value", "estimated_quality_drop",
        "estimated_quality_metrics", "estimated_quality_breach")


def _row(day: int) -> dict:
    return {name: None for name in SCHEMA.names} | {
        "window_start": dt.datetime(2026, 3, day), "window_end": dt.datetime(2026, 3, day + 1),
        "model_version": "1", "drift_share": 0.1, "breach": False, "retrain": False,
    }


def test_an_old_table_gains_the_new_columns(esteira_home):
    uc, settings = churn_usecase(), get_settings()
    old = pa.schema([field for field in SCHEMA if field.name not in _NEW])
    uri = tables.table_uri(settings, uc, tables.MONITORING)
    tables.append(uri, pa.Table.from_pylist([{k: v for k, v in _row(1).items() if k in old.names}], schema=old))

    write_result(settings, uc, _row(2) | {"estimated_quality_metric": "roc_auc", "estimated_quality_value": 0.81})
    history = read_history(settings, uc)
    assert set(_NEW) <= set(history.columns) and len(history) == 2
    assert history["estimated_quality_value"].iloc[0] != history["estimated_quality_value"].iloc[0]  # NaN: old row
    assert history["estimated_quality_value"].iloc[1] == 0.81
