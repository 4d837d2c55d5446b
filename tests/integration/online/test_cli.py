"""`esteira features get <uc> <key>` prints what the online store holds for an entity;
`esteira predict` says which model server did not answer, or that there is none (its answers:
tests/e2e/test_onboarding.py)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml

from esteira import cli
from esteira.features.online import open_store
from esteira.stages.window import RunWindow
from tests.helpers import TEST_START

from .conftest import refresh_and_publish

pytestmark = pytest.mark.integration


@pytest.fixture
def on_disk(churn, settings, tmp_path, monkeypatch):
    """The test's use case as the YAML file the command loads."""
    folder = tmp_path / "usecases"
    folder.mkdir()
    data = churn.model_dump(by_alias=True, mode="json", exclude_unset=True)
    (folder / "churn.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(folder))
    return churn


def test_features_get_prints_the_stored_entry(on_disk, settings, capsys):
    refresh_and_publish(on_disk, RunWindow(TEST_START, TEST_START + dt.timedelta(days=3)), run_id="cli")
    key = sorted(open_store(settings, on_disk).digests())[0]
    assert cli.main(["features", "get", "churn", key]) == 0
    shown = json.loads(capsys.readouterr().out)
    entry = open_store(settings, on_disk).get_many([key])[0]
    assert shown["customer_id"] == key
    assert shown["features"] == entry.features
    assert shown["feature_ts"] == entry.feature_ts.isoformat()
    assert shown["stale"] is True  # max_age 2d; the rows are from early 2026


def test_features_get_says_what_is_wrong(on_disk, settings, capsys):
    assert cli.main(["features", "get", "churn", "123456789"]) == 1
    assert "no stored features for customer_id 123456789" in capsys.readouterr().err
    assert cli.main(["features", "get", "churn", "abc"]) == 2
    assert "'customer_id' must be an integer" in capsys.readouterr().err


def test_predict_names_the_model_server_that_did_not_answer(on_disk, monkeypatch, capsys):
    from esteira.stack import process

    closed = f"http://127.0.0.1:{process.free_port()}"
    monkeypatch.setenv("ESTEIRA_MODEL_SERVER_URL", closed)
    assert cli.main(["predict", "churn", "10001"]) == 1
    assert f"the model server at {closed} did not answer" in capsys.readouterr().err


def test_predict_says_when_there_is_no_model_server(on_disk, monkeypatch, capsys):
    monkeypatch.setenv("ESTEIRA_MODEL_SERVER_URL", "off")
    assert cli.main(["predict", "churn", "10001"]) == 2
    assert "ESTEIRA_MODEL_SERVER_URL=off" in capsys.readouterr().err
