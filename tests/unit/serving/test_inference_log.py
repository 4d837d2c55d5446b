"""The inference log writes batches off the request path and reads back by time window."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import numpy as np

from esteira.config import get_settings, get_usecase
from esteira.serving.inference_log import (
    InferenceLog,
    Record,
    log_dir,
    read_inference_log,
    record_bytes,
)


def record(request_id: str, at: dt.datetime, rows: int, version: str = "3") -> Record:
    return Record(
        request_id=request_id,
        logged_at=at.replace(tzinfo=dt.UTC).timestamp(),
        model_name="churn",
        model_version=version,
        inputs={
            "plan": np.array(["basic", None, "premium"][:rows], dtype=object),
            "monthly_charges": np.arange(rows, dtype=np.float64) + 0.5,
        },
        predictions=np.arange(rows) % 2,
    )


def test_records_land_in_date_partitions_and_read_back_in_order(tmp_path):
    settings = dataclasses.replace(get_settings(), home=tmp_path)
    uc = get_usecase("churn")
    log = InferenceLog(log_dir(settings, uc), flush_seconds=60)
    log.start()
    log.append(record("b", dt.datetime(2026, 3, 1, 23, 59, 59), 3))
    log.append(record("a", dt.datetime(2026, 3, 1, 10, 0), 2))
    log.append(record("c", dt.datetime(2026, 3, 2, 0, 0, 1), 1, version="4"))
    log.close()

    days = sorted(p.name for p in log_dir(settings, uc).iterdir())
    assert days == ["date=2026-03-01", "date=2026-03-02"]
    rows = read_inference_log(settings, uc, dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 3))
    assert rows["request_id"].tolist() == ["a", "a", "b", "b", "b", "c"]
    assert rows["row"].tolist() == [0, 1, 0, 1, 2, 0]
    assert rows["plan"].tolist() == ["basic", None, "basic", None, "premium", "basic"]
    assert rows["monthly_charges"].tolist() == [0.5, 1.5, 0.5, 1.5, 2.5, 0.5]
    assert rows["prediction"].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert rows["model_version"].tolist() == ["3"] * 5 + ["4"]
    assert rows["logged_at"].iloc[0] == np.datetime64("2026-03-01T10:00:00")

    one_day = read_inference_log(settings, uc, dt.datetime(2026, 3, 2), dt.datetime(2026, 3, 3))
    assert one_day["request_id"].tolist() == ["c"]


def test_the_queue_is_bounded_by_bytes_and_append_never_blocks(tmp_path):
    small, large = record("s", dt.datetime(2026, 3, 1), 1), record("l", dt.datetime(2026, 3, 1), 3)
    limit = 2 * record_bytes(large) + record_bytes(small)
    dropped = []
    log = InferenceLog(tmp_path, max_queue_bytes=limit, on_drop=lambda: dropped.append(1))
    started = time.perf_counter()
    for _ in range(5):
        log.append(large)
    log.append(small)
    assert time.perf_counter() - started < 0.1
    assert log.dropped == 3 and len(dropped) == 3  # two large ones fit, and the small one
    assert log.queued_bytes == limit
    log.start()
    log.close()
    assert log.queued_bytes == 0 and log.written_rows == 7


def test_string_columns_parsed_by_mlflows_rules_are_logged_as_strings(tmp_path):
    settings = dataclasses.replace(get_settings(), home=tmp_path)
    uc = get_usecase("churn")
    mixed = dataclasses.replace(record("m", dt.datetime(2026, 3, 1), 3), inputs={
        "plan": np.array(["basic", float("nan"), 5], dtype=object),
        "monthly_charges": np.array([1.0, 2.0, 3.0]),
    })
    log = InferenceLog(log_dir(settings, uc), flush_seconds=60)
    log.start()
    log.append(mixed)
    log.close()
    rows = read_inference_log(settings, uc, dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 2))
    assert rows["plan"].tolist() == ["basic", None, "5"]


def test_flushes_on_its_own_without_close(tmp_path):
    log = InferenceLog(tmp_path, flush_seconds=0.1)
    log.start()
    log.append(record("x", dt.datetime(2026, 3, 1), 2))
    deadline = time.monotonic() + 5
    while log.written_rows < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.written_rows == 2
    assert list(tmp_path.glob("date=2026-03-01/*.parquet"))
    log.close()


def test_an_empty_window_gives_the_expected_columns(tmp_path):
    settings = dataclasses.replace(get_settings(), home=tmp_path)
    uc = get_usecase("churn")
    rows = read_inference_log(settings, uc, dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 2))
    assert rows.empty
    assert {"request_id", "model_version", "prediction", *uc.feature_names} <= set(rows.columns)
