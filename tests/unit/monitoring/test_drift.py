"""Drift: flags exactly the shifted columns, applies the declared methods and thresholds,
and records the sample sizes."""

from __future__ import annotations

import json

import pytest

from esteira.monitoring.drift import compute_drift
from esteira.monitoring.sampling import sample_frame
from esteira.usecase import ColumnDrift
from tests.unit.monitoring.frames import SHIFTED, churn_frame, churn_usecase, with_column_drift


@pytest.fixture(scope="module")
def uc():
    return churn_usecase(sample_size=3000)


@pytest.fixture(scope="module")
def reference():
    return churn_frame(10_000, seed=1)


def test_shifted_columns_and_only_those_drift(uc, reference):
    result = compute_drift(reference, churn_frame(6000, seed=2, shifted=SHIFTED), uc)
    assert set(result.drifted_columns) == set(SHIFTED)
    assert set(result.columns) == set(uc.feature_names)
    assert result.drift_share == pytest.approx(3 / 9)
    assert result.dataset_drift  # 3/9 >= 0.25
    scores = json.loads(result.scores_json())
    assert {c for c, s in scores.items() if s["drifted"]} == set(SHIFTED)


def test_no_shift_no_drift(uc, reference):
    result = compute_drift(reference, churn_frame(6000, seed=2), uc)
    assert result.drifted_columns == ()
    assert result.drift_share == 0.0
    assert not result.dataset_drift
    assert all(score.score < score.threshold for score in result.columns.values())


def test_one_shifted_column_stays_under_the_share_threshold(uc, reference):
    result = compute_drift(reference, churn_frame(6000, seed=2, shifted=("device",)), uc)
    assert result.drifted_columns == ("device",)
    assert not result.dataset_drift  # 1/9 < 0.25


def test_declared_method_and_threshold_are_applied(reference):
    uc = with_column_drift(
        churn_usecase(sample_size=3000),
        monthly_charges=ColumnDrift(method="wasserstein", threshold=0.1),
        plan=ColumnDrift(method="chisquare", threshold=0.01),
        minutes_7d_mean=ColumnDrift(threshold=5.0),
    )
    current = churn_frame(6000, seed=2, shifted=SHIFTED)
    current["minutes_7d_mean"] *= 1.5  # drifts by the default threshold, not by 5.0
    result = compute_drift(reference, current, uc)
    assert (
        result.columns["monthly_charges"].method,
        result.columns["monthly_charges"].threshold,
    ) == ("wasserstein", 0.1)
    assert (result.columns["plan"].method, result.columns["plan"].threshold) == ("chisquare", 0.01)
    assert result.columns["plan"].score > 0.01 and not result.columns["plan"].drifted  # a p-value
    assert result.columns["minutes_7d_mean"].threshold == 5.0
    assert not result.columns["minutes_7d_mean"].drifted
    assert set(result.drifted_columns) == set(SHIFTED)


def test_sample_sizes_are_recorded(uc, reference):
    current = churn_frame(2000, seed=2)
    result = compute_drift(reference, current, uc)
    assert (result.reference_rows, result.reference_sampled) == (10_000, 3000)
    assert (result.current_rows, result.current_sampled) == (2000, 2000)


def test_presampled_inputs_keep_their_source_sizes(uc, reference):
    sample = sample_frame(reference, size=2500, seed=3)
    result = compute_drift(sample, churn_frame(2000, seed=2), uc)
    assert (result.reference_rows, result.reference_sampled) == (10_000, 2500)


def test_missing_feature_column_is_named(uc, reference):
    with pytest.raises(ValueError, match="region"):
        compute_drift(reference, churn_frame(2000, seed=2).drop(columns="region"), uc)


def test_declared_column_must_be_a_feature(reference):
    uc = with_column_drift(churn_usecase(), churned=ColumnDrift(method="psi"))
    with pytest.raises(ValueError, match="churned"):
        compute_drift(reference, reference, uc)


def test_empty_window_is_refused(uc, reference):
    with pytest.raises(ValueError, match="current data has no rows"):
        compute_drift(reference, reference.head(0), uc)
