"""A home and a registered champion shared by the monitoring step's tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def module_home(tmp_path_factory, mlflow_server):
    """An ESTEIRA_HOME for the whole module (the champion is trained once)."""
    home = tmp_path_factory.mktemp("monitoring_home")
    saved = os.environ.get("ESTEIRA_HOME")
    os.environ["ESTEIRA_HOME"] = str(home)
    yield home
    if saved is None:
        os.environ.pop("ESTEIRA_HOME", None)
    else:
        os.environ["ESTEIRA_HOME"] = saved
