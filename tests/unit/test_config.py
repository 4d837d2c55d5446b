"""Use-case files fail loudly and precisely; settings come from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from esteira.config import ConfigError, get_settings, load_usecase, load_usecases

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "include" / "usecases" / "churn.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_shipped_usecase_loads():
    names = [uc.name for uc in load_usecases()]
    assert "churn" in names


def test_misspelled_key_names_file_and_key(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["training"]["primary_metrc"] = data["training"].pop("primary_metric")
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_usecase(path)
    message = str(err.value)
    assert str(path) in message
    assert "training.primary_metrc" in message
    assert "training.primary_metric" in message  # now missing, also named


def test_wrong_type_names_the_key(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["schema"]["max_bad_share"] = "lots"
    with pytest.raises(ConfigError, match=r"schema\.max_bad_share"):
        load_usecase(_write(tmp_path, data))


def test_feature_source_must_be_a_raw_column(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["features"]["definitions"][0]["source"] = "no_such_column"
    with pytest.raises(ConfigError, match="no_such_column"):
        load_usecase(_write(tmp_path, data))


def test_retraining_rule_is_checked(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["retraining"] = {"breaches": 4, "windows": 3}
    with pytest.raises(ConfigError, match="breaches must not exceed windows"):
        load_usecase(_write(tmp_path, data))


def test_settings_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path))
    monkeypatch.setenv("ESTEIRA_AIRFLOW_PORT", "9090")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ESTEIRA_MLFLOW_PORT", "5055")
    settings = get_settings()
    assert settings.home == tmp_path
    assert settings.airflow_url.endswith(":9090")
    assert settings.tracking_uri == "http://127.0.0.1:5055"


def test_bad_port_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("ESTEIRA_AIRFLOW_PORT", "eighty")
    with pytest.raises(ConfigError, match="ESTEIRA_AIRFLOW_PORT"):
        get_settings()


def test_tables_follow_the_table_root(monkeypatch, tmp_path):
    import dataclasses

    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ESTEIRA_TABLE_ROOT", raising=False)
    settings = get_settings()
    assert settings.table_uri("churn", "t") == str(tmp_path / "home" / "data" / "churn" / "t")
    moved = dataclasses.replace(settings, home=tmp_path / "elsewhere")
    assert moved.data_dir == tmp_path / "elsewhere" / "data"
    monkeypatch.setenv("ESTEIRA_TABLE_ROOT", str(tmp_path / "volume"))
    assert get_settings().table_uri("churn", "t") == str(tmp_path / "volume" / "churn" / "t")
