"""The time split never lets the future into training; metrics and selection by name."""

from __future__ import annotations

import pandas as pd
import pytest

from esteira.evaluation.metrics import metric_names
from esteira.training.candidates import build_pipeline
from esteira.training.fit import CandidateResult, fit_and_score, select_best
from esteira.training.split import SplitError, time_split
from tests.unit.training.synthetic import churn_frame, churn_usecase, demand_frame, demand_usecase


def test_train_precedes_validation_precedes_test():
    uc = churn_usecase()
    frame = churn_frame(uc, rows=500)
    split = time_split(uc, frame)
    ts = uc.timestamp
    assert split.train[ts].max() < split.validation[ts].min()
    assert split.validation[ts].max() < split.test[ts].min()
    assert sum(len(p) for p in split.parts().values()) == len(frame)
    assert len(split.test) == pytest.approx(0.2 * len(frame), abs=5)


def test_rows_sharing_a_timestamp_stay_on_one_side_whatever_the_row_order():
    uc = churn_usecase()
    frame = churn_frame(uc, rows=400)
    frame[uc.timestamp] = frame[uc.timestamp].dt.floor("D")  # many ties
    split = time_split(uc, frame)
    shuffled = time_split(uc, frame.sample(frac=1, random_state=1))
    assert split.train[uc.timestamp].max() < split.validation[uc.timestamp].min()
    for name, part in split.parts().items():
        pd.testing.assert_frame_equal(part, shuffled.parts()[name])


def test_too_few_timestamps_is_a_clear_error():
    uc = churn_usecase()
    frame = churn_frame(uc, rows=50)
    frame[uc.timestamp] = pd.Timestamp("2026-01-01")
    with pytest.raises(SplitError, match="empty"):
        time_split(uc, frame)


@pytest.mark.parametrize("which", ["classification", "regression"])
def test_metrics_per_problem_type_on_validation_and_test(which):
    uc = churn_usecase() if which == "classification" else demand_usecase()
    frame = churn_frame(uc) if which == "classification" else demand_frame(uc)
    family = uc.training.candidates[1].family
    fitted = fit_and_score(uc, {"name": family, "family": family, "params": {}}, frame)
    expected = {f"{p}_{m}" for p in ("val", "test") for m in metric_names(uc.problem_type)}
    assert set(fitted.metrics) == expected
    if which == "classification":
        assert 0.8 < fitted.metrics["test_roc_auc"] <= 1
    else:
        assert fitted.metrics["test_r2"] > 0.8
    # Seeded: the same inputs give the same numbers.
    again = fit_and_score(uc, {"name": family, "family": family, "params": {}}, frame)
    assert again.metrics == fitted.metrics
    assert isinstance(build_pipeline(uc, {"family": family, "params": {}}, 1), type(fitted.model))


def test_select_best_reads_the_validation_metric_in_its_direction():
    results = [
        CandidateResult("a", "r1", "m1", {"val_rmse": 3.0, "test_rmse": 1.0}),
        CandidateResult("b", "r2", "m2", {"val_rmse": 2.0, "test_rmse": 9.0}),
        CandidateResult("c", "r3", "m3", {"val_rmse": 2.0, "test_rmse": 0.5}).to_dict(),
    ]
    assert select_best(results, "rmse", greater_is_better=False).name == "b"
    assert select_best(results, "rmse", greater_is_better=True).name == "a"
    with pytest.raises(ValueError, match="val_roc_auc"):
        select_best(results, "roc_auc", True)
