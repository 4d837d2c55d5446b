"""Candidate expansion and pipelines: stable names, clear errors, raw columns in."""

from __future__ import annotations

import numpy as np
import pytest

from esteira.training.candidates import CandidateError, build_pipeline, expand_candidates
from tests.unit.training.synthetic import churn_frame, churn_usecase, demand_usecase


def test_every_grid_combination_is_one_named_candidate():
    uc = churn_usecase()
    override = [
        {"family": "random_forest", "params": {"n_estimators": [10, 20], "max_depth": [3, 5]}},
        {"family": "logistic_regression"},
    ]
    names = [c["name"] for c in expand_candidates(uc, override)]
    assert names == [
        "random_forest(max_depth=3,n_estimators=10)",
        "random_forest(max_depth=3,n_estimators=20)",
        "random_forest(max_depth=5,n_estimators=10)",
        "random_forest(max_depth=5,n_estimators=20)",
        "logistic_regression()",
    ]
    assert expand_candidates(uc, override) == expand_candidates(uc, override)


def test_without_override_the_yaml_candidates_are_used():
    uc = churn_usecase()
    assert [c["family"] for c in expand_candidates(uc)] == [
        c.family for c in uc.training.candidates
    ]
    assert [c["family"] for c in expand_candidates(uc, [])] == [
        c.family for c in uc.training.candidates
    ]


def test_a_family_of_the_other_problem_type_is_named_in_the_error():
    with pytest.raises(CandidateError, match="'ridge' does not fit problem_type 'binary_classification'"):
        expand_candidates(churn_usecase(), [{"family": "ridge", "params": {}}])
    with pytest.raises(CandidateError, match="'random_forest' does not fit problem_type 'regression'"):
        expand_candidates(demand_usecase(), [{"family": "random_forest", "params": {}}])


def test_unknown_hyperparameters_and_duplicates_are_refused():
    uc = churn_usecase()
    with pytest.raises(CandidateError, match="random_forest.*n_trees"):
        expand_candidates(uc, [{"family": "random_forest", "params": {"n_trees": [3]}}])
    with pytest.raises(CandidateError, match="declared twice"):
        expand_candidates(uc, [{"family": "logistic_regression"}] * 2)
    with pytest.raises(CandidateError, match="candidates\\[0\\]"):
        expand_candidates(uc, [{"params": {}}])


@pytest.mark.parametrize("family", ["logistic_regression", "random_forest", "hist_gradient_boosting"])
def test_the_pipeline_takes_raw_columns_with_missing_values(family):
    uc = churn_usecase()
    frame = churn_frame(uc, rows=300)
    assert frame["device"].isna().any() and frame["session_minutes"].isna().any()
    candidate = {"name": family, "family": family, "params": {}}
    first = build_pipeline(uc, candidate, seed=3).fit(frame[uc.feature_names], frame["churned"])
    again = build_pipeline(uc, candidate, seed=3).fit(frame[uc.feature_names], frame["churned"])
    unseen = frame[uc.feature_names].head(5).assign(plan="enterprise")
    proba = first.predict_proba(unseen)
    assert proba.shape == (5, 2)
    np.testing.assert_array_equal(proba, again.predict_proba(unseen))
