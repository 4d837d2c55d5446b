"""The point-in-time join never hands a label a feature row from its future."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from esteira.features.training_set import FEATURE_TIMESTAMP, point_in_time_join

_T0 = pd.Timestamp("2026-01-01")


def _frame(rows: list[tuple[int, int]], value_name: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["id", "minute"], dtype="int64").drop_duplicates().reset_index(drop=True)
    frame["ts"] = _T0 + pd.to_timedelta(frame.pop("minute"), unit="min")
    frame[value_name] = range(len(frame))
    return frame


_rows = st.lists(st.tuples(st.integers(1, 5), st.integers(0, 300)), max_size=80)


@settings(max_examples=100, deadline=None)
@given(_rows, _rows)
def test_each_label_gets_the_latest_feature_row_at_or_before_it(label_rows, feature_rows):
    labels, features = _frame(label_rows, "label"), _frame(feature_rows, "f")
    joined = point_in_time_join(labels, features, "id", "ts")

    assert (joined[FEATURE_TIMESTAMP] <= joined["ts"]).all()
    expected = {}
    for _, label in labels.iterrows():
        candidates = features[(features["id"] == label["id"]) & (features["ts"] <= label["ts"])]
        if len(candidates):
            latest = candidates.loc[candidates["ts"].idxmax()]
            expected[(label["id"], label["ts"])] = (latest["ts"], latest["f"])
    got = {
        (row.id, row.ts): (row.feature_timestamp, row.f) for row in joined.itertuples(index=False)
    }
    assert got == expected  # labels without an earlier feature row are dropped, none invented
