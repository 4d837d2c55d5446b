"""The monitoring Delta table: one row per (window, model version), reruns replace it."""

from __future__ import annotations

import datetime as dt

import pytest

from esteira import tables
from esteira.config import get_settings
from esteira.monitoring.results import SCHEMA, read_history, write_result
from tests.unit.monitoring.frames import churn_usecase

pytestmark = pytest.mark.integration


def _row(day: int, version: str, share: float) -> dict:
    row = {name: None for name in SCHEMA.names}
    row |= {
        "window_start": dt.datetime(2026, 3, day),
        "window_end": dt.datetime(2026, 3, day + 1),
        "model_name": "churn",
        "model_version": version,
        "run_label": f"run-{day}",
        "drift_share": share,
        "breach": share >= 0.25,
        "retrain": False,
        "reference_rows": 10,
    }
    return row


def test_history_is_empty_before_the_first_window(esteira_home):
    history = read_history(get_settings(), churn_usecase())
    assert history.empty and list(history.columns) == SCHEMA.names


def test_rerun_replaces_the_row_of_its_window_and_version(esteira_home):
    settings, uc = get_settings(), churn_usecase()
    write_result(settings, uc, _row(1, "1", 0.1))
    write_result(settings, uc, _row(2, "1", 0.2))
    write_result(settings, uc, _row(2, "2", 0.3))
    before = read_history(settings, uc)
    write_result(settings, uc, _row(2, "1", 0.2))
    assert before.equals(read_history(settings, uc))
    write_result(settings, uc, _row(2, "1", 0.5))
    history = read_history(settings, uc)
    assert len(history) == 3
    assert history.set_index(["window_start", "model_version"])["drift_share"].to_dict() == {
        (dt.datetime(2026, 3, 1), "1"): 0.1,
        (dt.datetime(2026, 3, 2), "1"): 0.5,
        (dt.datetime(2026, 3, 2), "2"): 0.3,
    }
    assert str(history["window_end"].dtype).startswith("datetime64")
    assert (settings.data_dir / "churn" / "monitoring" / "_delta_log").is_dir()
    stored = tables.table_info(tables.table_uri(settings, uc, tables.MONITORING))
    assert (stored["name"], stored["description"]) == ("monitoring", "churn monitoring")


def test_row_with_unknown_or_missing_columns_is_refused(esteira_home):
    row = _row(1, "1", 0.1) | {"surprise": 1}
    del row["breach"]
    with pytest.raises(
        ValueError, match=r"missing columns \['breach'\].*unknown columns \['surprise'\]"
    ):
        write_result(get_settings(), churn_usecase(), row)
