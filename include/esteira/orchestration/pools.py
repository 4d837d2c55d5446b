"""One Airflow pool of one slot per model, for the tasks that move its aliases (promotion,
rollback, deploy): they never overlap on any executor, on any number of hosts, even where
the registry's file lock is not shared between them (see ``esteira.registry.lock``).

A task in a pool that does not exist is never scheduled ("non-existent pool"), and in
Airflow 3 neither a task process nor the DAG processor may write the metadata database
(their ORM access is blocked; the REST API needs a user's credentials). The scheduler may:
when a run of a DAG starts, ``on_dag_run_running`` adds the pools its tasks name that are
still missing, in the scheduler's own transaction, so they exist before any task of the run
is queued. The Esteira plugin registers this module as a listener. A pool that exists is
left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from airflow.listeners import hookimpl

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from esteira.usecase import UseCase

PREFIX = "esteira_registry__"


def registry_pool(uc: UseCase) -> str:
    """The pool of ``uc``'s model: ``esteira_registry__<model name>``."""
    return f"{PREFIX}{uc.model_name}"


def ensure_pools(session: Session, names: Iterable[str]) -> list[str]:
    """Add the Esteira pools among ``names`` that do not exist yet, one slot each, in
    ``session``'s transaction; returns the ones that were missing.

    The caller commits: the scheduler forbids any other commit, a savepoint's included, in
    its loop. The insert skips a pool that a second scheduler added meanwhile (ON CONFLICT
    DO NOTHING, or INSERT IGNORE on MySQL), so that race costs no error.
    """
    from airflow.models.pool import Pool
    from sqlalchemy import select

    wanted = {name for name in names if name.startswith(PREFIX)}
    if not wanted:
        return []
    missing = sorted(wanted - set(session.scalars(select(Pool.pool).where(Pool.pool.in_(wanted)))))
    if not missing:
        return []
    rows = [
        {"pool": name, "slots": 1, "include_deferred": False,
         "description": f"Esteira: one alias change of model '{name.removeprefix(PREFIX)}' at a time "
                        "(promotion, rollback, deploy)"}
        for name in missing
    ]
    session.execute(_insert_ignoring_conflicts(session.get_bind().dialect.name, Pool, rows))
    return missing


def _insert_ignoring_conflicts(dialect: str, table, rows: list[dict]):
    from sqlalchemy import insert

    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as upsert
    else:
        return insert(table).values(rows).prefix_with("IGNORE")  # MySQL
    return upsert(table).values(rows).on_conflict_do_nothing(index_elements=["pool"])


@hookimpl
def on_dag_run_running(dag_run, msg: str) -> None:
    """Called by the scheduler as it starts a run, with the run in its open session."""
    from sqlalchemy.orm import object_session

    dag, session = getattr(dag_run, "dag", None), object_session(dag_run)
    if dag is None or session is None:
        return
    ensure_pools(session, {task.pool for task in dag.tasks})
