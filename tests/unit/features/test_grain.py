"""Timestamps at a grain (dates, datetimes, integer years, `YYYY-MM`), and the YAML keys
of sources, labels and grains, refused with the key named."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from esteira.config import ConfigError, load_usecase
from esteira.features.validation import parse_timestamps, validate_rows
from esteira.usecase import ColumnRule


@pytest.mark.parametrize(("grain", "values", "expected"), [
    ("year", pd.Series([2019, 2020]), ["2019-01-01", "2020-01-01"]),
    ("year", pd.Series(["2019", "2020-07-04"]), ["2019-01-01", "2020-01-01"]),
    ("month", pd.Series(["2024-03", "2024-03-31 23:00"]), ["2024-03-01", "2024-03-01"]),
    ("month", pd.Series([dt.date(2024, 5, 17), dt.date(2024, 6, 1)], dtype=object), ["2024-05-01", "2024-06-01"]),
    ("week", pd.Series(["2026-01-07"]), ["2026-01-05"]),  # the Monday of its ISO week
    ("day", pd.Series(pd.to_datetime(["2026-01-07 13:00"])), ["2026-01-07"]),
    ("event", pd.Series(["2026-01-07T13:00:05+01:00"]), ["2026-01-07 12:00:05"]),
])
def test_timestamps_parse_and_floor_to_the_grain(grain, values, expected):
    stamps, bad = parse_timestamps(values, grain)
    assert not bad.any()
    assert list(stamps) == list(pd.to_datetime(expected))


@pytest.mark.parametrize(("grain", "value"), [
    ("month", "2024"), ("day", "2024-03"), ("event", "2024-03"), ("month", 2024), ("year", "2024-13"),
])
def test_a_timestamp_coarser_than_the_grain_or_unparsable_is_a_bad_row(grain, value):
    rules = {"id": ColumnRule(type="int"), "ts": ColumnRule(type="timestamp", nullable=False)}
    checked = validate_rows(pd.DataFrame({"id": [1], "ts": [value]}), rules, ["id", "ts"], grain=grain)
    at = "" if grain == "event" else f" at grain {grain}"  # event: today's message
    assert checked.bad["reason"].tolist() == [f"ts: not a timestamp{at} ('{value}')"]


def test_typed_columns_validate_like_strings():
    rules = {"id": ColumnRule(type="int"), "ts": ColumnRule(type="timestamp"),
             "ok": ColumnRule(type="bool"), "kind": ColumnRule(type="category", allowed=["1", "2"])}
    raw = pd.DataFrame({"id": [1, 2], "ts": pd.to_datetime(["2026-01-01", "2026-01-02"]),
                        "ok": [True, False], "kind": [1, 3]})
    checked = validate_rows(raw, rules, ["id", "ts"])
    assert checked.good["ok"].tolist() == [True]
    assert checked.bad["reason"].tolist() == ["kind: unknown category '3' (allowed: 1, 2)"]


_BASE = """
name: panel
problem_type: regression
entity: person_id
timestamp: year
grain: year
schema:
  columns:
    person_id: {type: int, nullable: false}
    year: {type: timestamp, nullable: false}
    wage: {type: float}
features:
  table: panel_features
  definitions:
    - {name: wage_prev, function: lag, source: wage, window: 1 periods}
label: {column: wage}
training: {primary_metric: rmse, greater_is_better: false, candidates: [{family: ridge}]}
gate: {thresholds: [{metric: rmse, greater_is_better: false}]}
"""


def _load(tmp_path, source: str, extra: str = ""):
    path = tmp_path / "panel.yaml"
    path.write_text(_BASE + source + extra)
    return load_usecase(path)


def test_a_year_panel_from_one_file_loads_with_a_yearly_schedule_and_labels_from_its_rows(tmp_path):
    uc = _load(tmp_path, "source: {kind: file, path: panel.parquet}\n")
    assert uc.schedule == "@yearly" and uc.labels_from_events and uc.source.kind == "file"


@pytest.mark.parametrize(("source", "message"), [
    ("source: {kind: file}\n", "source.path is required when source.kind is 'file'"),
    ("source: {kind: sql, conn_id: warehouse}\n", "source.query is required when source.kind is 'sql'"),
    ("source: {kind: delta, path: t, conn_id: x}\n", "source.conn_id does not apply to source.kind 'delta'"),
    ("source: {kind: landing_files}\n", "source.landing is required"),
    ("source: {kind: ftp, path: x}\n", "key 'source.kind'"),
    ("source: {kind: file, path: x}\nlabel: {column: churned}\n", "label.source: 'churned' is not a column"),
])
def test_source_keys_are_checked_per_kind_naming_the_key(tmp_path, source, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(tmp_path, source.replace("label: {column: churned}\n", ""),
              "label: {column: churned}\n" if "churned" in source else "")


def test_a_window_that_is_not_a_duration_period_or_event_count_names_the_feature(tmp_path):
    path = tmp_path / "panel.yaml"
    path.write_text(_BASE.replace("window: 1 periods", "window: 1 month") + "source: {kind: file, path: x}\n")
    with pytest.raises(ConfigError, match=r"key 'features.definitions.0.window': Value error, window must look like"):
        load_usecase(path)


def test_the_training_window_is_counted_in_the_grain(tmp_path):
    from esteira.stages.model_training import TrainingOptions, TrainingTrigger, choose_window

    uc = _load(tmp_path, "source: {kind: file, path: x}\n").model_copy()
    uc = uc.model_copy(update={"training": uc.training.model_copy(update={"window": "3 periods"})})
    end = dt.datetime(2025, 1, 1)
    trigger = TrainingTrigger(kind="features", end=end)
    # The trigger form always sends window_days (its default is the YAML's): not a choice.
    same = TrainingOptions(window_days=uc.training.window_days).apply(uc)
    assert choose_window(same, TrainingOptions(), trigger, lambda: end, lambda: None).start == dt.datetime(2022, 1, 1)
    chosen = TrainingOptions(window_days=30).apply(uc)
    assert choose_window(chosen, TrainingOptions(), trigger, lambda: end, lambda: None).start == dt.datetime(2024, 12, 2)
