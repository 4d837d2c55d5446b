"""The layering of docs/architecture.md: only `esteira.orchestration` may import Airflow.

Each module is imported in a fresh interpreter in which ``import airflow`` fails, so a
module that reaches for Airflow at import time, directly or through another module,
fails this test by name.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "include" / "esteira"

_PROBE = """
import importlib, importlib.abc, sys

class _NoAirflow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ImportError(f"{name} is not importable outside esteira.orchestration")
        return None

sys.meta_path.insert(0, _NoAirflow())
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "orchestration" in parts or parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_outside_orchestration_imports_without_airflow():
    modules = _modules()
    assert "esteira.stages.model_training" in modules and len(modules) > 40
    done = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_probe_catches_a_module_that_imports_airflow():
    done = subprocess.run([sys.executable, "-c", _PROBE, "esteira.orchestration.assets"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "esteira.orchestration.assets" in done.stdout
