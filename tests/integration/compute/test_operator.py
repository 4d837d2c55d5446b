"""EsteiraStepOperator against the emulator: failures, kills and retries.

The operator runs as Airflow runs it: ``execute`` until it defers, the provider's own
trigger polls the emulator (as the triggerer would), then ``execute_complete``. The
context carries what Airflow gives a task: ``ti`` (ids, try number, ``xcom_push``), the
run's ``params`` and a ``task_state_store`` that, like Airflow's, is shared by the tries
of one task instance.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import uuid
from dataclasses import dataclass, field
from datetime import date

import pytest
from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger
from airflow.sdk.exceptions import TaskDeferred

from esteira.compute.databricks import StepFailed
from esteira.config import load_usecase
from esteira.features.generator import generate_landing
from esteira.orchestration.operator import STATE_KEY, EsteiraStepOperator
from tests.databricks_emulator.service import cluster_env, small_churn

pytestmark = pytest.mark.integration

_STUB = textwrap.dedent(
    """
    import json, os, pathlib, sys, time
    here = pathlib.Path(__file__).parent
    while (here / "hold").exists():
        time.sleep(0.1)
    if (here / "fail").exists():
        (here / "fail").unlink()
        raise RuntimeError("stub job failed on purpose")
    print("ESTEIRA_RESULT " + json.dumps({"pid": os.getpid(), "argv": sys.argv[1:]}))
    """
)


@dataclass
class TaskInstance:
    dag_id: str = "churn__feature_refresh"
    run_id: str = "manual__1"
    task_id: str = "refresh_features"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict = field(default_factory=dict)

    def xcom_push(self, key: str, value) -> None:
        self.xcoms[key] = value


class TaskStateStore:
    """The get/set/delete surface of Airflow 3.3's ``context['task_state_store']``: one per
    task instance (so per DAG run, whose id it carries here), shared by its tries."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.run_id = f"manual__{uuid.uuid4().hex[:8]}"

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value) -> None:
        self.values[key] = json.loads(json.dumps(value))

    def delete(self, key) -> None:
        self.values.pop(key, None)


def _context(store: TaskStateStore, try_number: int = 1) -> dict:
    params = {"compute_backend": "databricks", "interval_start": "2026-01-01", "interval_end": "2026-01-03"}
    return {"ti": TaskInstance(run_id=store.run_id, try_number=try_number), "params": params, "task_state_store": store,
            "data_interval_start": None, "data_interval_end": None}


def _operator() -> EsteiraStepOperator:
    return EsteiraStepOperator(task_id="refresh_features", step="feature_refresh", usecase="churn")


def _defer(operator: EsteiraStepOperator, context: dict) -> DatabricksExecutionTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    assert deferred.value.method_name == "execute_complete"
    return deferred.value.trigger


async def _first_event(trigger: DatabricksExecutionTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def _finish(operator: EsteiraStepOperator, trigger: DatabricksExecutionTrigger, context: dict) -> dict:
    return operator.execute_complete(context, asyncio.run(_first_event(trigger)))


@pytest.fixture
def stub_jobs(tmp_path, monkeypatch, esteira_home, emulator):
    """ESTEIRA_DATABRICKS_JOBS_PATH at a folder whose feature_refresh.py is a controllable stub."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "feature_refresh.py").write_text(_STUB)
    usecases = tmp_path / "usecases"
    small_churn(usecases)
    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(usecases))
    for key, value in cluster_env(esteira_home, usecases, ESTEIRA_DATABRICKS_JOBS_PATH=str(jobs)).items():
        monkeypatch.setenv(key, value)
    return jobs


def _submits(emulator, since: int) -> list[dict]:
    return emulator.requests("/runs/submit")[since:]


def test_a_failed_job_fails_the_task_with_its_error_text(emulator, tmp_path, monkeypatch, esteira_home):
    """The real entry point, a day's landing file missing: the task fails with the job's
    exception (with none delivered at all, the step would skip instead)."""
    usecases = tmp_path / "usecases"
    uc = load_usecase(small_churn(usecases))
    generate_landing(uc, esteira_home / "landing" / uc.source.landing, start=date(2026, 1, 1),
                     end=date(2026, 1, 2))
    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(usecases))
    for key, value in cluster_env(esteira_home, usecases).items():
        monkeypatch.setenv(key, value)
    operator, context = _operator(), _context(TaskStateStore())
    trigger = _defer(operator, context)
    with pytest.raises(StepFailed, match=r"FileNotFoundError: 1 events file\(s\) missing"):
        _finish(operator, trigger, context)
    assert context["ti"].xcoms["run_page_url"].endswith(f"/run/{trigger.run_id}")


def test_a_retry_while_the_run_is_going_reattaches_without_a_second_run(emulator, stub_jobs):
    (stub_jobs / "hold").touch()
    store, before = TaskStateStore(), len(_submits(emulator, 0))
    first = _defer(_operator(), _context(store, try_number=1))
    # try 1's worker dies here; try 2 starts with the same task state
    retry, context = _operator(), _context(store, try_number=2)
    second = _defer(retry, context)
    assert second.run_id == first.run_id
    assert len(_submits(emulator, before)) == 1
    (stub_jobs / "hold").unlink()
    result = _finish(retry, second, context)
    assert result["argv"][:2] == ["--usecase", "churn"]
    assert json.loads(result["argv"][3])["airflow"]["try_number"] == 1  # the run try 1 submitted
    assert STATE_KEY not in store.values


def test_a_retry_after_a_failed_run_submits_a_new_one(emulator, stub_jobs):
    (stub_jobs / "fail").touch()
    store, before = TaskStateStore(), len(_submits(emulator, 0))
    operator, context = _operator(), _context(store, try_number=1)
    first = _defer(operator, context)
    with pytest.raises(StepFailed, match="RuntimeError: stub job failed on purpose"):
        _finish(operator, first, context)
    retry, context = _operator(), _context(store, try_number=2)
    second = _defer(retry, context)
    assert second.run_id != first.run_id
    submits = _submits(emulator, before)
    assert len(submits) == 2
    assert submits[0]["params"]["idempotency_token"] != submits[1]["params"]["idempotency_token"]
    assert json.loads(_finish(retry, second, context)["argv"][3])["airflow"]["try_number"] == 2


def test_a_retry_after_a_succeeded_run_takes_its_result(emulator, stub_jobs):
    store = TaskStateStore()
    operator, context = _operator(), _context(store, try_number=1)
    trigger = _defer(operator, context)
    asyncio.run(_first_event(trigger))  # the run succeeded, then try 1 died before finishing
    before = len(_submits(emulator, 0))
    result = _operator().execute(_context(store, try_number=2))
    assert json.loads(result["argv"][3])["airflow"]["try_number"] == 1
    assert len(_submits(emulator, before)) == 0


def test_a_try_that_died_before_recording_its_run_is_found_by_its_token(emulator, stub_jobs):
    (stub_jobs / "hold").touch()
    store, before = TaskStateStore(), len(_submits(emulator, 0))
    first = _defer(_operator(), _context(store, try_number=1))
    store.values[STATE_KEY].pop("run_id")  # as if the worker died right after submitting
    second = _defer(_operator(), _context(store, try_number=2))
    assert second.run_id == first.run_id
    tokens = {s["params"]["idempotency_token"] for s in _submits(emulator, before)}
    assert len(tokens) == 1
    (stub_jobs / "hold").unlink()


def test_a_killed_task_cancels_its_run(emulator, stub_jobs):
    (stub_jobs / "hold").touch()
    # killed in the worker (before or instead of deferring)
    operator = _operator()
    first = _defer(operator, _context(TaskStateStore()))
    operator.on_kill()
    # killed while deferred: the triggerer cancels the trigger and calls its on_kill
    second = _defer(_operator(), _context(TaskStateStore()))

    async def kill_while_deferred() -> dict:
        polling = asyncio.create_task(_first_event(second))
        await asyncio.sleep(1.5)
        polling.cancel()
        await second.on_kill()
        return await _first_event(second)

    event = asyncio.run(kill_while_deferred())
    cancelled = {int(r["params"]["run_id"]) for r in emulator.requests("/runs/cancel")}
    assert {first.run_id, second.run_id} <= cancelled
    assert json.loads(event["run_state"])["result_state"] == "CANCELED"
    (stub_jobs / "hold").unlink()
