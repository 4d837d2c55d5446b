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
