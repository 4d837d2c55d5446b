"""Task processes start warm: the modules the stages use are imported once, in the process
that task processes are forked from, instead of again in every task process.

Airflow 3's supervisor forks each task process from its worker. A LocalExecutor worker is
itself forked from the scheduler when the executor starts, and a Celery pool process from
the Celery worker after it has imported its modules. Importing the stages' modules there
means every task process inherits them: cold, a task paid 1-10 s of imports (mlflow,
sklearn and skops for a candidate, Evidently for a monitoring window), more than its work.

Which modules: every import statement reachable from the task entry points (the stages,
the jobs and the local backend), including those inside functions, which is where the
heavy ones are kept so that parsing and the CLI stay cheap. Read from the source, so the
list cannot fall behind the code; a module it misses costs time, never correctness.

- Embedded stack: ``AIRFLOW__CORE__EXECUTOR=esteira.orchestration.warm.WarmLocalExecutor``.
- Celery workers: ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=esteira.orchestration.celery_config.CELERY_CONFIG``.
"""

from __future__ import annotations

import ast
import importlib
import logging
import time
import warnings
from pathlib import Path

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

_ESTEIRA = Path(__file__).resolve().parents[1]
ENTRY_PACKAGES = ("esteira.stages", "esteira.jobs")
ENTRY_MODULES = ("esteira.compute.local",)


def task_modules() -> list[str]:
    """The modules reachable by import from the task entry points, Esteira's own and the
    libraries they name (``TYPE_CHECKING`` blocks left out), in discovery order. Read from
    the source files: nothing is imported to find them."""
    pending = [*ENTRY_MODULES]
    for package in ENTRY_PACKAGES:
        folder = _source(package).parent
        pending += [f"{package}.{path.stem}" for path in sorted(folder.glob("*.py")) if path.stem != "__init__"]
    found: dict[str, None] = {}
    while pending:
        name = pending.pop(0)
        if name in found:
            continue
        found[name] = None
        source = _source(name)
        if source is not None:
            pending += _named(ast.parse(source.read_text(encoding="utf-8")))
    return list(found)


def _source(module: str) -> Path | None:
    """The file of an Esteira module or package; None for a library."""
    parts = module.split(".")
    if parts[0] != "esteira":
        return None
    base = _ESTEIRA.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _named(node: ast.AST) -> list[str]:
    """The modules the import statements under ``node`` name, but in ``if TYPE_CHECKING``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level or not node.module:
            return []
        submodules = (f"{node.module}.{a.name}" for a in node.names)
        return [node.module, *(name for name in submodules if _source(name) is not None)]
    type_checking = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
    children = node.orelse if type_checking else ast.iter_child_nodes(node)
    return [name for child in children for name in _named(child)]


def import_task_libraries() -> float:
    """Import ``task_modules()``; the seconds it took. A module that fails to import is
    logged and left to the task that needs it, which then fails with the real error."""
    started = time.perf_counter()
    modules = task_modules()
    with warnings.catch_warnings():
        # Import-time deprecation notices would repeat in the parent's log, not the tasks'.
        warnings.simplefilter("ignore")
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a warm-up must never stop the scheduler
                log.warning("warm start: could not import %s", name, exc_info=True)
    seconds = time.perf_counter() - started
    log.info("warm start: imported %d modules for the task processes in %.1f s", len(modules), seconds)
    return seconds


class WarmLocalExecutor(LocalExecutor):
    """The LocalExecutor whose workers, and so every task process, start with the task
    modules imported: the scheduler imports them once, then forks its workers."""

    def start(self) -> None:
        if self.is_mp_using_fork:
            import_task_libraries()
        super().start()
