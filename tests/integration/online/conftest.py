"""The online store's backends, each with its own namespace: SQLite under the test's
ESTEIRA_HOME, and the machine's real Redis under a key prefix of this test (deleted after)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from esteira.config import get_settings, load_usecase
from esteira.features.generator import generate_landing
from esteira.features.online import open_store
from esteira.stages import feature_refresh
from esteira.stages.window import RunWindow
from esteira.usecase import OnlineSpec, UseCase
from tests.helpers import shrink

_ROOT = Path(__file__).resolve().parents[3]
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def churn(esteira_home) -> UseCase:
    """Churn with 60 customers over 20 days, landing files written, online store declared."""
    uc = shrink(load_usecase(_ROOT / "include" / "usecases" / "churn.yaml"), entities=60, days=20)
    uc = uc.model_copy(update={"online": OnlineSpec(max_age="2d", stale="refuse")})
    generate_landing(uc, get_settings().landing_dir / uc.source.landing)
    return uc


@pytest.fixture(params=["sqlite", "redis"])
def settings(request, esteira_home, churn, monkeypatch):
    """Settings choosing each backend in turn (through the environment, as the stage reads
    it); the Redis keys of the test are removed after."""
    if request.param == "redis":
        monkeypatch.setenv("ESTEIRA_ONLINE_STORE", REDIS_URL)
        monkeypatch.setenv("ESTEIRA_ONLINE_PREFIX", f"esteira-test-{uuid.uuid4().hex[:12]}")
    settings = get_settings()
    yield settings
    open_store(settings, churn).clear()


def refresh_and_publish(uc: UseCase, window: RunWindow, run_id: str) -> dict:
    """The refresh DAG's two steps: the refresh, then its publication (materialization)."""
    return feature_refresh.publish(uc, feature_refresh.refresh(uc, window, run_id))
