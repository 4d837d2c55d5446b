"""Evidently (about 180 MiB and seconds to import) is imported by the monitoring step only:
not by registration, which takes the reference, nor by the page or any module at import."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import esteira.monitoring.estimation, esteira.monitoring.inputs, esteira.monitoring.monitor
import esteira.monitoring.reference, esteira.stages.drift_monitoring, esteira.stages.model_training
import esteira.ui.chart, esteira.ui.overview
print(sorted(name for name in sys.modules if name.split(".")[0] in ("evidently", "mlflow", "sklearn")))
"""


def test_no_module_imports_evidently_mlflow_or_sklearn_at_import():
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
