"""Windowed features per entity over event time: inclusive of the event, never later."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esteira.features.definitions import (
    Batch,
    check_definitions,
    compute_features,
    get_function,
    history_columns,
    history_start,
    register,
)
from esteira.usecase import FeatureDef

_DAY = 86_400


@st.composite
def _events(draw):
    """Events of a few entities over ~3 weeks, unique per (entity, second), some missing."""
    n = draw(st.integers(1, 60))
    entities = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    seconds = draw(st.lists(st.integers(0, 21 * _DAY), min_size=n, max_size=n))
    values = draw(st.lists(st.one_of(st.none(), st.floats(-100, 100)), min_size=n, max_size=n))
    frame = pd.DataFrame({"id": entities, "s": seconds, "x": [np.nan if v is None else v for v in values]})
    frame = frame.drop_duplicates(["id", "s"]).reset_index(drop=True)
    frame["ts"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(frame.pop("s"), unit="s")
    target = np.asarray(draw(st.lists(st.booleans(), min_size=len(frame), max_size=len(frame))))
    return frame, target


def _reference(frame: pd.DataFrame, target: np.ndarray, days: int) -> pd.DataFrame:
    """The same features row by row, the obvious way."""
    rows = []
    for _, row in frame[target].iterrows():
        same = frame[(frame["id"] == row["id"]) & (frame["ts"] <= row["ts"])]
        window = same[same["ts"] > row["ts"] - pd.Timedelta(days=days)]["x"].dropna()
        rows.append({
            "id": row["id"], "ts": row["ts"],
            "mean": window.mean() if len(window) else np.nan,
            "sum": window.sum() if len(window) else np.nan,
            "max": window.max() if len(window) else np.nan,
            "count": float(len(window)),
        })
    return pd.DataFrame(rows, columns=["id", "ts", "mean", "sum", "max", "count"])


@settings(max_examples=60, deadline=None)
@given(_events(), st.sampled_from([1, 3, 7]))
def test_windows_match_a_row_by_row_reference(events, days):
    frame, target = events
    batch = Batch.build(frame[~target], frame[target], "id", "ts")
    got = batch.target[["id", "ts"]].copy()
    for name in ("mean", "sum", "max", "count"):
        feature = FeatureDef(name=name, function=f"rolling_{name}", source="x", window=f"{days}d")
        got[name] = get_function(feature.function)(batch, feature)
    expected = _reference(frame, target, days)
    key = ["id", "ts"]
    got = got.sort_values(key).reset_index(drop=True)
    expected = expected.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=False, rtol=1e-9, atol=1e-9)


def test_a_later_event_never_changes_an_earlier_feature():
    frame = pd.DataFrame({
        "id": [1, 1, 1, 2],
        "ts": pd.to_datetime(["2026-01-01 10:00", "2026-01-03 10:00", "2026-01-03 11:00", "2026-01-03 10:30"]),
        "x": [1.0, 5.0, 100.0, 7.0],
    })
    later = np.array([False, False, True, False])  # in the data, but after the others
    batch = Batch.build(frame[later], frame[~later], "id", "ts")
    window = FeatureDef(name="m", function="rolling_max", source="x", window="7d")
    assert list(get_function("rolling_max")(batch, window)) == [1.0, 5.0, 7.0]
    count = FeatureDef(name="c", function="rolling_count", source=None, window="2d")
    # (t - 2d, t]: the first event is exactly two days before the second, so outside
    assert list(get_function("rolling_count")(batch, count)) == [1.0, 1.0, 1.0]


def test_a_use_case_can_register_its_own_function(churn_uc):
    @register("test_rolling_min")
    def rolling_min(batch: Batch, feature: FeatureDef) -> np.ndarray:
        start, end = batch.window_bounds(feature.window)
        return batch.reduce(np.fmin, batch.values(feature.source), start, end)

    feature = FeatureDef(name="low", function="test_rolling_min", source="monthly_charges", window="3d", type="float")
    uc = churn_uc.model_copy(update={
        "features": churn_uc.features.model_copy(update={"definitions": [feature]})
    })
    check_definitions(uc)
    frame = pd.DataFrame({
        "customer_id": [3, 3], "event_ts": pd.to_datetime(["2026-01-01", "2026-01-02"]),
        "monthly_charges": [20.0, 30.0],
    })
    batch = Batch.build(frame.iloc[:1], frame.iloc[1:], "customer_id", "event_ts")
    assert compute_features(batch, uc)["low"].tolist() == [20.0]
    assert history_start(uc, datetime(2026, 1, 10)) == datetime(2026, 1, 7)


def test_unknown_functions_fail_naming_the_feature(churn_uc):
    feature = FeatureDef(name="odd", function="no_such_function", source="plan")
    uc = churn_uc.model_copy(update={
        "features": churn_uc.features.model_copy(update={"definitions": [feature]})
    })
    with pytest.raises(ValueError, match="'odd': no feature function 'no_such_function'"):
        check_definitions(uc)


def test_feature_types_follow_the_definitions(churn_uc):
    frame = pd.DataFrame({
        "customer_id": pd.array([1], dtype="Int64"),
        "event_ts": pd.to_datetime(["2026-01-01"]),
        **{c: [None] for c in churn_uc.schema_.columns if c not in ("customer_id", "event_ts")},
    })
    frame["plan"] = pd.array(["basic"], dtype="string")
    history = frame[history_columns(churn_uc)].iloc[:0]
    batch = Batch.build(history, frame, "customer_id", "event_ts")
    features = compute_features(batch, churn_uc)
    assert list(features.columns) == ["customer_id", "event_ts", *churn_uc.feature_names]
    assert str(features["plan"].dtype) == "string"
    assert features["events_7d_count"].tolist() == [1.0]
    assert np.isnan(features["minutes_7d_mean"].iloc[0])


def _panel(delay: str, features: list[dict]):
    from esteira.usecase import UseCase

    return UseCase.model_validate({
        "name": "panel", "problem_type": "regression", "entity": "person_id", "timestamp": "period",
        "grain": "month", "start_date": "2024-01-01", "source": {"kind": "file", "path": "panel.parquet"},
        "schema": {"columns": {
            "person_id": {"type": "int", "nullable": False}, "period": {"type": "timestamp", "nullable": False},
            "hours": {"type": "float", "nullable": True}, "wage": {"type": "float", "nullable": True},
        }},
        "features": {"table": "panel_features", "definitions": [
            {"name": "hours", "function": "identity", "source": "hours"}, *features]},
        "label": {"column": "wage", "delay": delay},
        "training": {"primary_metric": "rmse", "greater_is_better": False, "candidates": [{"family": "ridge"}]},
        "gate": {"thresholds": [{"metric": "rmse", "greater_is_better": False}]},
    })


@pytest.mark.parametrize("delay, feature, leaks", [
    ("0 periods", {"function": "lag", "window": "1 periods"}, False),
    ("0 periods", {"function": "rolling_mean", "window": "3 periods", "closed": "left"}, False),
    ("2 periods", {"function": "lag", "window": "1 periods"}, True),
    ("2 periods", {"function": "lag", "window": "2 periods"}, False),
    ("2 periods", {"function": "lag", "window": "1 events"}, True),
    ("2 periods", {"function": "rolling_mean", "window": "3 periods", "closed": "left"}, True),
    ("45d", {"function": "lag", "window": "1 periods"}, True),  # a month may be 28 days
    ("45d", {"function": "lag", "window": "2 periods"}, False),
    ("30d", {"function": "lag", "window": "30d"}, False),
])
def test_a_feature_of_the_label_reads_only_labels_known_by_then(delay, feature, leaks):
    uc = _panel(delay, [{"name": "wage_before", "source": "wage", **feature}])
    if leaks:
        with pytest.raises(ValueError, match=r"'wage_before': reads the label 'wage', known .* \(a leak\)"):
            check_definitions(uc)
    else:
        check_definitions(uc)
