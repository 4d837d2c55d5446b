"""Candidate models: expand the declared families and grids into named specs and pipelines.

A candidate spec is a small JSON-able dict ``{"name", "family", "params"}`` so that it can
be an Airflow mapped-task argument; the name is stable (family plus sorted parameters) so
that a retried task finds the MLflow run of an earlier try.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from esteira.usecase import CandidateSpec, UseCase

Candidate = dict[str, Any]

_FAMILIES: dict[str, dict[str, Callable[[], BaseEstimator]]] = {
    "binary_classification": {
        "logistic_regression": lambda: LogisticRegression(max_iter=1000),
        "random_forest": lambda: RandomForestClassifier(n_jobs=1),
        "hist_gradient_boosting": HistGradientBoostingClassifier,
    },
    "regression": {
        "ridge": Ridge,
        "random_forest_regressor": lambda: RandomForestRegressor(n_jobs=1),
        "hist_gradient_boosting_regressor": HistGradientBoostingRegressor,
    },
}
_NUMERIC = {"int", "float", "bool"}
_CATEGORICAL = {"category", "string"}


class CandidateError(ValueError):
    """A candidate declaration is wrong; the message names the family or parameter."""


def families(problem_type: str) -> list[str]:
    return sorted(_FAMILIES[problem_type])


def candidate_name(family: str, params: Mapping[str, Any]) -> str:
    """``family(k1=v1,k2=v2)`` with sorted keys: the same declaration gives the same name."""
    inner = ",".join(f"{key}={params[key]}" for key in sorted(params))
    return f"{family}({inner})"


def _estimator(problem_type: str, family: str) -> BaseEstimator:
    known = _FAMILIES[problem_type]
    if family not in known:
        other = next((p for p, fams in _FAMILIES.items() if family in fams), None)
        hint = f" (it is a {other} family)" if other else ""
        raise CandidateError(
            f"candidate family '{family}' does not fit problem_type '{problem_type}'{hint}; "
            f"use one of: {', '.join(sorted(known))}"
        )
    return known[family]()


def expand_candidates(
    uc: UseCase, override: Sequence[Mapping[str, Any]] | None = None
) -> list[Candidate]:
    """Every combination of every declared grid, as named specs.

    ``override`` has the shape of ``training.candidates`` in the YAML (a per-run Param);
    when given and not empty it replaces the YAML's list. Unknown families or parameters
    raise CandidateError here, before any task is mapped.
    """
    raw = list(override) if override else [c.model_dump() for c in uc.training.candidates]
    expanded: list[Candidate] = []
    for index, item in enumerate(raw):
        try:
            spec = CandidateSpec.model_validate(item)
        except ValidationError as exc:
            raise CandidateError(f"candidates[{index}]: {exc.errors()[0]['msg']}") from None
        estimator = _estimator(uc.problem_type, spec.family)
        keys = sorted(spec.params)
        for values in itertools.product(*(spec.params[k] for k in keys)):
            params = dict(zip(keys, values, strict=True))
            try:
                estimator.set_params(**params)
            except ValueError as exc:
                raise CandidateError(f"candidate family '{spec.family}': {exc}") from None
            expanded.append(
                {"name": candidate_name(spec.family, params), "family": spec.family, "params": params}
            )
    names = [c["name"] for c in expanded]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CandidateError(f"candidates declared twice: {', '.join(duplicates)}")
    return expanded


def _preprocessor(uc: UseCase) -> ColumnTransformer:
    numeric, categorical = [], []
    for feature in uc.features.definitions:
        if feature.type in _NUMERIC:
            numeric.append(feature.name)
        elif feature.type in _CATEGORICAL:
            categorical.append(feature.name)
        else:
            raise CandidateError(
                f"feature '{feature.name}' has type '{feature.type}', which the models cannot take"
            )
    numeric_steps = Pipeline(
        [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
    )
    categorical_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return ColumnTransformer(
        [("numeric", numeric_steps, numeric), ("categorical", categorical_steps, categorical)],
        remainder="drop",
        verbose_feature_names_out=False,
    )


def build_pipeline(uc: UseCase, candidate: Mapping[str, Any], seed: int) -> Pipeline:
    """Preprocessing plus the model, so the logged model takes the raw feature columns.

    ``random_state`` is set from ``seed`` unless the candidate sets it: reruns are identical.
    """
    estimator = _estimator(uc.problem_type, candidate["family"])
    params = dict(candidate["params"])
    if "random_state" in estimator.get_params() and "random_state" not in params:
        params["random_state"] = seed
    estimator.set_params(**params)
    return Pipeline([("preprocess", _preprocessor(uc)), ("model", estimator)])
