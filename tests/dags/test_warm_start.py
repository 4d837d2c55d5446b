"""Task processes start warm: the modules the stages need are found from their source and
imported once, before the embedded stack's executor or a Celery worker forks."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

from esteira.config import get_settings
from esteira.orchestration import warm
from esteira.stack.embedded import airflow_env


def _python(code: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; the JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_modules_are_found_through_the_imports_inside_functions():
    modules = warm.task_modules()
    stages = {f"esteira.stages.{s}" for s in ("feature_refresh", "model_training", "model_promotion",
                                             "batch_inference", "drift_monitoring")}
    assert stages | {"esteira.jobs.train_candidate", "esteira.training.fit"} <= set(modules)
    # the heavy libraries, which modules import inside their functions, several hops away
    assert {"mlflow.sklearn", "skops.io", "evidently", "deltalake"} <= set(modules)
    assert not {"esteira.cli", "esteira.ui.overview", "esteira.demo"} & set(modules)


def test_imports_for_type_checking_only_are_left_out():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import heavy.types\nelse:\n    import light\n"
        "def f():\n    from esteira.orchestration import warm, not_a_module\n"
    )
    assert warm._named(tree) == ["typing", "light", "esteira.orchestration", "esteira.orchestration.warm"]


def test_the_warm_executor_imports_before_it_forks_its_workers():
    found = _python(
        "import json, sys\n"
        "from esteira.orchestration.warm import WarmLocalExecutor, task_modules\n"
        "executor = WarmLocalExecutor(parallelism=1)\n"
        "executor.start()\n"
        "loaded = [m for m in task_modules() if m in sys.modules]\n"
        "workers = len(executor.workers)\n"
        "executor.end()\n"
        "print(json.dumps({'missing': sorted(set(task_modules()) - set(loaded)), 'workers': workers}))\n"
    )
    assert found == {"missing": [], "workers": 1}


def test_the_embedded_stack_runs_the_warm_executor_as_a_local_one():
    """`airflow standalone` replaces any executor that is not local."""
    executor = airflow_env(get_settings())["AIRFLOW__CORE__EXECUTOR"]
    found = _python(
        "import json\n"
        "from airflow.executors.executor_loader import ExecutorLoader\n"
        "cls, _ = ExecutorLoader.import_default_executor_cls()\n"
        "print(json.dumps({'name': cls.__name__, 'local': cls.is_local}))\n",
        {"AIRFLOW__CORE__EXECUTOR": executor},
    )
    assert found == {"name": "WarmLocalExecutor", "local": True}


def test_celery_workers_import_the_task_modules_before_their_pool_forks():
    from celery import Celery

    from esteira.orchestration.celery_config import CELERY_CONFIG

    app = Celery("esteira-test", config_source=CELERY_CONFIG)
    assert set(warm.task_modules()) <= set(app.loader.default_modules)
    assert app.conf.broker_url and app.conf.task_default_queue  # Airflow's defaults are kept
