"""The one-slot pool per model: the tasks that move a model's aliases name it, and the
scheduler's listener creates it in a real Airflow metadata database on first use (a task in
a missing pool would never be scheduled). The production suite runs it through a scheduler."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from esteira.orchestration import pools
from tests.unit.training.synthetic import churn_usecase

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def metadata_db():
    """The session's Airflow home (tests/conftest.py), migrated."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    from airflow.utils.session import create_session

    return create_session


def _pools(create_session, names) -> dict[str, int]:
    from airflow.models.pool import Pool
    from sqlalchemy import select

    with create_session() as session:
        return dict(session.execute(select(Pool.pool, Pool.slots).where(Pool.pool.in_(names))).all())


def test_the_tasks_that_move_aliases_share_the_models_pool():
    uc = churn_usecase()
    expected = {
        "model_promotion": {"promote_challenger", "deploy_champion"},
        "model_rollback": {"rollback_champion", "deploy_champion"},
    }
    for stage, pooled in expected.items():
        dag = runpy.run_path(str(REPO / "dags" / f"{stage}.py"), run_name="dag_module")[stage](uc)
        by_pool = {task.task_id: task.pool for task in dag.tasks}
        assert {t for t, p in by_pool.items() if p == pools.registry_pool(uc)} == pooled, stage
        assert {p for t, p in by_pool.items() if t not in pooled} <= {"default_pool"}, stage


def test_missing_pools_are_created_with_one_slot_once(metadata_db):
    from airflow.utils.sqlalchemy import prohibit_commit

    names = ["esteira_registry__m_a", "esteira_registry__m_b", "default_pool", "someone_elses"]
    with metadata_db() as session, prohibit_commit(session) as guard:  # as in the scheduler's loop
        assert sorted(pools.ensure_pools(session, names)) == names[:2]
        guard.commit()
    created = _pools(metadata_db, names)
    assert {n: created.get(n) for n in names if n != "default_pool"} == {
        "esteira_registry__m_a": 1, "esteira_registry__m_b": 1, "someone_elses": None,
    }
    with metadata_db() as session:
        assert pools.ensure_pools(session, names) == []


def test_a_starting_run_creates_its_pool_in_the_schedulers_session(metadata_db):
    """The scheduler calls the listener inside its loop, where any commit but its own (a
    savepoint's included) raises: the pool must ride on the scheduler's transaction."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.sqlalchemy import prohibit_commit

    uc = churn_usecase().model_copy(update={"name": "pooltest"})
    dag = runpy.run_path(str(REPO / "dags" / "model_rollback.py"), run_name="dag_module")["model_rollback"](uc)
    name = pools.registry_pool(uc)
    with metadata_db() as session, prohibit_commit(session) as guard:
        run = DagRun(dag_id=dag.dag_id, run_id="pool-test", run_type="manual")
        run.dag = dag
        session.add(run)  # as the scheduler holds it: in its open session
        pools.on_dag_run_running(dag_run=run, msg="started")
        session.expunge(run)  # this test only wants the pool committed
        guard.commit()
    assert _pools(metadata_db, [name]) == {name: 1}
