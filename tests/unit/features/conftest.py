"""Use cases for the feature-store unit tests, shrunk so each test takes well under a second."""

from __future__ import annotations

from pathlib import Path

import pytest

from esteira.config import load_usecase
from esteira.usecase import UseCase

_ROOT = Path(__file__).resolve().parents[3]




@pytest.fixture(scope="session")
def churn_uc() -> UseCase:
    return load_usecase(_ROOT / "include" / "usecases" / "churn.yaml")


@pytest.fixture(scope="session")
def demand_uc() -> UseCase:
    return load_usecase(_ROOT / "tests" / "usecases" / "demand.yaml")
