"""`esteira up` refuses a port that one of Airflow's side servers would also take, before
it starts anything, naming both settings."""

from __future__ import annotations

import dataclasses

import pytest

from esteira.config import get_settings
from esteira.stack import embedded, process


def test_a_model_server_port_on_the_triggerer_log_port_is_refused_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path))
    settings = dataclasses.replace(get_settings(), airflow_port=47197, model_server_port=47911)
    with pytest.raises(process.ServiceError, match=r"ESTEIRA_MODEL_SERVER_PORT=47911 .*TRIGGER_LOG_SERVER_PORT"):
        embedded.up(settings, echo=lambda *_: None)
    assert not settings.run_dir.exists() or not any(settings.run_dir.glob("*.pid"))


def test_the_side_ports_follow_the_airflow_port():
    assert sorted(embedded.side_ports(8080).values()) == [8793, 8794, 8795]


def test_a_tuned_airflow_setting_set_in_the_environment_wins_and_the_stacks_own_do_not(tmp_path, monkeypatch):
    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "8")
    monkeypatch.setenv("AIRFLOW_HOME", "/somewhere/else")
    env = embedded.airflow_env(get_settings())
    assert env["AIRFLOW__CORE__PARALLELISM"] == "8"
    assert env["AIRFLOW__CORE__EXECUTOR"] == embedded.TUNING["AIRFLOW__CORE__EXECUTOR"]
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
