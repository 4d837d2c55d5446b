"""A registered churn model on the session's MLflow server, as the training stage leaves it."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from esteira.config import get_settings, get_usecase
from esteira.usecase import RegistrySpec, UseCase
from tests.integration.serving import models


def fresh_usecase() -> UseCase:
    """The churn use case under a model name of its own, so tests never share an alias."""
    return get_usecase("churn").model_copy(
        update={"registry": RegistrySpec(model_name=f"churn_{uuid.uuid4().hex[:8]}")}
    )


@pytest.fixture(scope="module")
def uc() -> UseCase:
    return fresh_usecase()


@pytest.fixture(scope="module")
def settings(mlflow_server, tmp_path_factory):
    """Settings on the session's MLflow server with a home of this module's own."""
    return dataclasses.replace(get_settings(), home=tmp_path_factory.mktemp("serving_home"))


@pytest.fixture(scope="module")
def champion(uc, settings) -> str:
    """Version 1 of ``uc.model_name``, a random forest pipeline, with the champion alias."""
    version = models.register(uc, models.train(uc, seed=1))
    models.set_champion(uc, version)
    return version
