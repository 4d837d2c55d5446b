"""The Esteira page answers from cheap reads: gathering it reads the registry's tags and the
monitoring table, and imports neither sklearn nor Evidently (the drift report is read only
on its own route)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from esteira.config import get_settings, get_usecase
from tests.unit.ui.seed import seed_monitoring, seed_registry

_GATHER = """
import json, sys
from esteira.config import get_settings, get_usecase
from esteira.ui import overview, page

uc = get_usecase("churn")
uc = uc.model_copy(update={"registry": uc.registry.model_copy(update={"model_name": sys.argv[1]})})
view = overview.usecase_overview(uc, get_settings(), "", "/esteira/usecases/churn/reports")
page.render_page([view], "2026-03-01T00:00:00+00:00", "http://mlflow")
print(json.dumps({
    "problems": view["problems"],
    "champion": view["champion"]["version"],
    "windows": len(view["monitoring"]["windows"]),
    "imported": sorted(m for m in ("sklearn", "evidently") if m in sys.modules),
}))
"""


def test_gathering_the_page_imports_neither_sklearn_nor_evidently(mlflow_server, esteira_home, monkeypatch):
    monkeypatch.setenv("ESTEIRA_MODEL_SERVER_URL", "off")
    model = f"ui_cost_{uuid.uuid4().hex[:8]}"
    uc = get_usecase("churn")
    uc = uc.model_copy(update={"registry": uc.registry.model_copy(update={"model_name": model})})
    settings = get_settings()
    versions = seed_registry(uc, settings)
    seed_monitoring(uc, settings, versions["champion"])
    done = subprocess.run([sys.executable, "-c", _GATHER, model], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["problems"] == [] and found["champion"] == versions["champion"] and found["windows"]
    assert found["imported"] == []
