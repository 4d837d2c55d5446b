"""The synthetic landing data: deterministic, delayed labels, a drift switch that moves
only the chosen columns."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from esteira.features.generator import generate_landing
from esteira.features.validation import read_raw, validate
from tests.helpers import shrink


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_reruns_and_sub_ranges_write_the_same_bytes(churn_uc, tmp_path):
    uc = shrink(churn_uc, entities=120, days=6)
    generate_landing(uc, tmp_path / "a")
    generate_landing(uc, tmp_path / "a")
    generate_landing(uc, tmp_path / "b", start=date(2026, 1, 3), end=date(2026, 1, 5))
    full, part = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(full) == 12 and len(part) == 4
    assert all(full[name] == content for name, content in part.items())
    other_seed = shrink(churn_uc, entities=120, days=6, seed=8)
    generate_landing(other_seed, tmp_path / "c", end=date(2026, 1, 2))
    assert _files(tmp_path / "c")["events_2026-01-01.csv"] != full["events_2026-01-01.csv"]


def test_columns_volume_and_bad_rows_follow_the_use_case(churn_uc, tmp_path):
    uc = shrink(churn_uc, entities=400, days=3, bad_row_share=0.02)
    generate_landing(uc, tmp_path)
    raw = pd.read_csv(tmp_path / "events_2026-01-02.csv", dtype=str)
    assert list(raw.columns) == list(uc.schema_.columns)
    assert 0.5 * 400 < len(raw) < 1.5 * 400  # 0..2 events per customer and day, ~1 on average
    assert raw.groupby("customer_id").size().max() <= 2
    checked = validate(read_raw(tmp_path / "events_2026-01-02.csv", list(raw.columns)), uc)
    assert 0 < len(checked.bad) < 0.05 * len(raw)
    assert checked.good["session_minutes"].isna().any()  # missing values, not only bad rows


def test_labels_land_delay_days_after_their_events(churn_uc, tmp_path):
    uc = shrink(churn_uc, entities=150, days=20)
    generate_landing(uc, tmp_path)
    delay = uc.label.delay_days
    folder = tmp_path
    assert len(pd.read_csv(folder / f"labels_{date(2026, 1, 1) + timedelta(days=delay - 1)}.csv")) == 0
    labels = pd.read_csv(folder / f"labels_{date(2026, 1, 1) + timedelta(days=delay + 2)}.csv")
    events = pd.read_csv(folder / "events_2026-01-03.csv", dtype=str)
    assert list(labels.columns) == [uc.entity, uc.timestamp, uc.label.column]
    assert set(labels[uc.timestamp]) == set(events[uc.timestamp])
    assert set(labels[uc.label.column]) <= {0, 1}


def test_drift_shifts_only_the_chosen_columns_from_its_start(churn_uc, tmp_path):
    uc = shrink(churn_uc, entities=600, days=80)
    drift_start = uc.source.generator.drift.start
    before, after = drift_start - timedelta(days=1), drift_start + timedelta(days=1)
    for day in (before, after):
        generate_landing(uc, tmp_path / "on", start=day, end=day + timedelta(days=1))
        generate_landing(uc, tmp_path / "off", start=day, end=day + timedelta(days=1), drift=False)

    def events(switch, day):
        return pd.read_csv(tmp_path / switch / f"events_{day}.csv", dtype=str)

    pd.testing.assert_frame_equal(events("on", before), events("off", before))
    on, off = events("on", after), events("off", after)
    shifted = set(uc.source.generator.drift.columns)
    for column in set(on.columns) - shifted:
        pd.testing.assert_series_equal(on[column], off[column])
    for column in ("monthly_charges", "session_minutes"):
        ratio = pd.to_numeric(on[column], errors="coerce") / pd.to_numeric(off[column], errors="coerce")
        expected = 1 + uc.source.generator.drift.columns[column]
        assert np.nanmedian(ratio) == pytest.approx(expected, rel=0.02)
    moved = on["device"] != off["device"]
    assert set(on.loc[moved & off["device"].notna(), "device"]) == {"tv"}
    assert 0.25 < moved.mean() < 0.5  # half the rows move; those already on 'tv' stay
