"""Where a heavy step runs: the run's Param, then the YAML, then ESTEIRA_COMPUTE_BACKEND."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from esteira.compute.backend import resolve_backend
from esteira.config import ConfigError, get_settings, load_usecase

CHURN = Path(__file__).resolve().parents[3] / "include" / "usecases" / "churn.yaml"


@pytest.fixture
def churn():
    return load_usecase(CHURN)


def test_the_param_wins_then_the_yaml_then_the_environment(churn):
    settings = dataclasses.replace(get_settings(), compute_backend="databricks")
    on_yaml = churn.model_copy(update={"compute": churn.compute.model_copy(update={"training": "local"})})
    assert resolve_backend("train_candidate", on_yaml, "databricks", settings) == "databricks"
    assert resolve_backend("train_candidate", on_yaml, "default", settings) == "local"
    assert resolve_backend("feature_refresh", on_yaml, None, settings) == (on_yaml.compute.feature_refresh or "databricks")


def test_an_unknown_backend_or_step_is_named(churn):
    with pytest.raises(ConfigError, match="compute_backend='spark'"):
        resolve_backend("train_candidate", churn, "spark", get_settings())
    with pytest.raises(ConfigError, match="no compute step 'score'"):
        resolve_backend("score", churn, None, get_settings())
