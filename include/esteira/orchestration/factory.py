"""Turn every use case into its DAGs: each `dags/<stage>.py` calls `build_for_usecases`.

Parsing stays cheap: this module imports only `airflow.sdk`, the stdlib and the
use-case loader (pydantic and yaml are already loaded by Airflow).
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from typing import Any

from airflow.sdk import DAG

from esteira.config import ConfigError, get_settings, get_usecase, load_usecases
from esteira.usecase import UseCase

STAGES = (
    "feature_refresh",
    "model_training",
    "model_promotion",
    "model_rollback",
    "batch_inference",
    "drift_monitoring",
)


def dag_kwargs(uc: UseCase, stage: str, doc_md: str | None, **extra: Any) -> dict[str, Any]:
    """What every Esteira DAG sets: id, static start date, no catchup, tags, retries, docs."""
    return {
        "dag_id": uc.dag_id(stage),
        "start_date": dt.datetime.combine(uc.start_date, dt.time(), tzinfo=dt.UTC),
        "catchup": False,
        "tags": ["esteira", uc.name, stage],
        "default_args": {"owner": uc.owner or "esteira", "retries": 2, "retry_delay": dt.timedelta(seconds=30)},
        "doc_md": f"{doc_md or ''}\n\n**Use case:** `{uc.name}`: {uc.description}",
        "max_active_runs": 1,
        **extra,
    }


def build_for_usecases(builder: Callable[[UseCase], DAG], namespace: dict[str, Any]) -> None:
    """Call ``builder`` for each use case and expose each DAG in the DAG file's namespace.

    A broken use-case file fails the DAG file's import with the file and key named, which
    Airflow shows as an import error in the UI.
    """
    for uc in load_usecases(get_settings()):
        built = builder(uc)
        namespace[built.dag_id] = built


def test_main(builder: Callable[[UseCase], DAG], argv: list[str] | None = None) -> None:
    """`python dags/<stage>.py <usecase> [key=value ...]`: run one DAG with `dag.test()`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python dags/<stage>.py <usecase> [param=value ...]")
    try:
        uc = get_usecase(argv[0])
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    conf = dict(item.split("=", 1) for item in argv[1:])
    builder(uc).test(run_conf=conf)
