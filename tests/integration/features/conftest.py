"""Small use cases and their landing data for the feature-store integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from esteira.config import get_settings, load_usecase
from esteira.features.generator import generate_landing
from esteira.usecase import UseCase
from tests.helpers import shrink

_ROOT = Path(__file__).resolve().parents[3]



@pytest.fixture
def settings(esteira_home):
    return get_settings()


@pytest.fixture
def churn(settings) -> UseCase:
    """Churn with 150 customers over 40 days, its landing files written."""
    uc = shrink(load_usecase(_ROOT / "include" / "usecases" / "churn.yaml"), entities=150, days=40)
    generate_landing(uc, settings.landing_dir / uc.source.landing)
    return uc


@pytest.fixture
def demand(settings) -> UseCase:
    uc = shrink(load_usecase(_ROOT / "tests" / "usecases" / "demand.yaml"), entities=30, days=30)
    generate_landing(uc, settings.landing_dir / uc.source.landing)
    return uc
