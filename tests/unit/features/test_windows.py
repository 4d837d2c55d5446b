"""Windows in durations, periods of the grain and events; `closed: left` is strictly past;
`lag` reads the entity's earlier row."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esteira.features.definitions import (
    Batch,
    get_function,
    parse_window,
    period_ordinals,
    period_start,
    shift_back,
)
from esteira.usecase import FeatureDef

_DAY = 86_400
_WINDOWS = ["1d", "3d", "12h", "2w", "1 periods", "2 periods", "3 periods", "1 events", "2 events"]
_FUNCTIONS = ["rolling_mean", "rolling_sum", "rolling_max", "rolling_count"]


@st.composite
def _panel(draw):
    """Rows of a few entities over ~4 months at a grain (stamps floored to its periods,
    one row per entity and stamp), some values missing, and which rows are targets."""
    grain = draw(st.sampled_from(["event", "day", "week", "month"]))
    n = draw(st.integers(1, 50))
    entities = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    seconds = draw(st.lists(st.integers(0, 120 * _DAY), min_size=n, max_size=n))
    values = draw(st.lists(st.one_of(st.none(), st.floats(-100, 100)), min_size=n, max_size=n))
    frame = pd.DataFrame({"id": entities, "x": [np.nan if v is None else v for v in values]})
    stamps = pd.Timestamp("2026-01-01") + pd.to_timedelta(pd.Series(seconds), unit="s")
    frame["ts"] = period_start(stamps.astype("datetime64[us]"), grain)
    frame = frame.drop_duplicates(["id", "ts"]).reset_index(drop=True)
    target = np.asarray(draw(st.lists(st.booleans(), min_size=len(frame), max_size=len(frame))))
    return frame, target, grain


def _features(frame, target, grain, window, function):
    batch = Batch.build(frame[~target][["id", "ts", "x"]], frame[target], "id", "ts", grain)
    feature = FeatureDef(name="f", function=function, source="x", window=window, closed="left")
    out = batch.target[["id", "ts"]].copy()
    out["f"] = np.asarray(get_function(function)(batch, feature), dtype=np.float64)
    return batch, out.sort_values(["id", "ts"]).reset_index(drop=True)


@settings(max_examples=150, deadline=None)
@given(_panel(), st.sampled_from(_WINDOWS))
def test_closed_left_windows_hold_only_the_entitys_strictly_earlier_rows(panel, window):
    frame, target, grain = panel
    batch = Batch.build(frame[~target][["id", "ts", "x"]], frame[target], "id", "ts", grain)
    start, end = batch.window_bounds(window, "left")
    for row, lo, hi in zip(batch.rows, start, end, strict=True):
        inside = batch.data.iloc[lo:hi]
        assert (inside["id"] == batch.data["id"].iloc[row]).all()
        assert (inside["ts"] < batch.data["ts"].iloc[row]).all()


@settings(max_examples=150, deadline=None)
@given(_panel(), st.sampled_from(_WINDOWS), st.sampled_from(_FUNCTIONS + ["lag"]), st.integers(0, 10**6))
def test_no_feature_of_a_row_reads_a_value_at_or_after_its_own_timestamp(panel, window, function, seed):
    """Scramble every value stamped at or after a row's time: its feature does not move."""
    frame, target, grain = panel
    _, before = _features(frame, target, grain, window, function)
    rng = np.random.default_rng(seed)
    for _, row in before.iterrows():
        scrambled = frame.copy()
        later = scrambled["ts"] >= row["ts"]
        scrambled.loc[later, "x"] = rng.uniform(1e3, 1e4, int(later.sum()))
        _, after = _features(scrambled, target, grain, window, function)
        same = after[(after["id"] == row["id"]) & (after["ts"] == row["ts"])]["f"].iloc[0]
        assert (np.isnan(same) and np.isnan(row["f"])) or same == pytest.approx(row["f"])


def _month_panel() -> pd.DataFrame:
    return pd.DataFrame({
        "id": [1, 1, 1, 1, 2, 2],
        "ts": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-04-01", "2024-05-01", "2024-01-01", "2024-02-01"]),
        "x": [1.0, 2.0, 4.0, 5.0, 10.0, 20.0],
    })


@pytest.mark.parametrize(("closed", "expected"), [
    # 3 periods at grain month: May sees Feb..Apr (left) or Mar..May (right); March is missing
    ("left", [np.nan, 1.0, 3.0, 6.0, np.nan, 10.0]),
    ("right", [1.0, 3.0, 6.0, 9.0, 10.0, 30.0]),
])
def test_periods_are_calendar_months_at_grain_month(closed, expected):
    frame = _month_panel()
    batch = Batch.build(frame.iloc[:0], frame, "id", "ts", "month")
    feature = FeatureDef(name="s", function="rolling_sum", source="x", window="3 periods", closed=closed)
    got = pd.Series(get_function("rolling_sum")(batch, feature))
    np.testing.assert_allclose(got, expected)


@pytest.mark.parametrize(("window", "expected"), [
    ("1 periods", [np.nan, 1.0, np.nan, 4.0, np.nan, 10.0]),   # the previous month's row, if any
    ("2 periods", [np.nan, np.nan, 2.0, np.nan, np.nan, np.nan]),
    ("1 events", [np.nan, 1.0, 2.0, 4.0, np.nan, 10.0]),        # the previous row, however old
    ("45d", [np.nan, np.nan, 2.0, 2.0, np.nan, np.nan]),        # latest row at or before t - 45 days
])
def test_lag_reads_the_entitys_earlier_row(window, expected):
    frame = _month_panel()
    batch = Batch.build(frame.iloc[:0], frame, "id", "ts", "month")
    feature = FeatureDef(name="prev", function="lag", source="x", window=window)
    np.testing.assert_allclose(pd.Series(get_function("lag")(batch, feature), dtype=float), expected)


def test_event_windows_count_events_and_stay_within_the_entity():
    frame = _month_panel()
    batch = Batch.build(frame.iloc[:0], frame, "id", "ts", "event")
    feature = FeatureDef(name="c", function="rolling_count", source="x", window="2 events", closed="left")
    assert list(get_function("rolling_count")(batch, feature)) == [0.0, 1.0, 2.0, 2.0, 0.0, 1.0]


def test_window_units_and_periods():
    assert parse_window("7d").count == 7 * _DAY and parse_window("3 periods").unit == "periods"
    assert parse_window("2 events").unit == "events" and parse_window("12h").count == 12 * 3600
    stamps = pd.to_datetime(["2026-01-04", "2026-01-05", "2026-03-15"]).to_numpy().astype("datetime64[us]")
    weeks = period_ordinals(stamps, "week")
    assert weeks[1] - weeks[0] == 1  # Sunday, then Monday: a new ISO week
    assert list(np.diff(period_ordinals(stamps, "month"))) == [0, 2]
    assert shift_back(datetime(2024, 2, 1), "3 periods", "month") == datetime(2023, 11, 1)
    assert shift_back(datetime(2024, 1, 1), "2 periods", "year") == datetime(2022, 1, 1)
    assert shift_back(datetime(2024, 1, 10), "2 periods", "week") == datetime(2023, 12, 27)
    assert shift_back(datetime(2024, 1, 10), "1 events", "day") is None
