"""The Airflow operator of a heavy step: local in the worker, or a deferrable Databricks run.

The backend is resolved when the task runs (Param ``compute_backend``, then the YAML
``compute.<step>``, then ESTEIRA_COMPUTE_BACKEND), and both paths return the same
reference dict as the task's XCom. Parsing stays cheap: the Databricks provider, the
use case and the step code are imported only in ``execute``.

Retries, done right. Databricks returns the existing run for a repeated
``idempotency_token`` whatever its state, so a token alone would hand a retry its failed
run back. Each try therefore submits with its own token, and records token and run id in
the task's ``task_state_store`` (Airflow 3.3; kept across the tries of one task
instance). A retry first looks at the recorded run: still PENDING/RUNNING/TERMINATING -> it
reattaches (no second run); TERMINATED/SUCCESS -> it takes that run's result; any other
end -> it submits anew. A try that died between submitting and recording the run id
left its token behind: resubmitting with that token finds the run it may have created.
The record is deleted once the task succeeds, so clearing a succeeded task reruns it.

Kill: ``on_kill`` cancels the run while the task is in the worker; while deferred, the
provider's trigger cancels it (``DatabricksExecutionTrigger.on_kill``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from esteira.orchestration.context import skip_if_nothing

if TYPE_CHECKING:
    from airflow.providers.databricks.hooks.databricks import RunState
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

    from esteira.compute.databricks import DatabricksBackend, DatabricksConfig
    from esteira.compute.job import StepJob

STATE_KEY = "esteira_databricks_run"
RUN_PAGE_KEY = "run_page_url"


class DatabricksRunLink(BaseOperatorLink):
    """The Databricks run page of the task's run (empty when the step ran locally)."""

    name = "Databricks run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(key=RUN_PAGE_KEY, ti_key=ti_key) or ""


class EsteiraStepOperator(BaseOperator):
    """Run ``esteira.jobs.<step>`` for a use case; returns the step's reference dict.

    :param step: entry point under ``esteira.jobs`` (``feature_refresh``, ``train_candidate``)
    :param usecase: use-case name (or YAML path) the entry point loads
    :param arguments: the step's inputs (references; XComArgs are resolved)
    :param item_arguments: inputs that differ per mapped instance (``.expand(item_arguments=...)``)
    :param compute_backend: forces a backend; default: the run's Param ``compute_backend``

    The entry point also receives ``params`` (the run's Params), ``airflow`` (dag_id,
    run_id, task_id, map_index, try_number) and ``data_interval`` (ISO start/end).
    """

    template_fields = ("arguments", "item_arguments", "compute_backend")
    operator_extra_links = (DatabricksRunLink(),)
    ui_color = "#1CB1C2"

    def __init__(
        self,
        *,
        step: str,
        usecase: str,
        arguments: Mapping[str, Any] | None = None,
        item_arguments: Mapping[str, Any] | None = None,
        compute_backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.step, self.usecase = step, usecase
        self.arguments, self.item_arguments = arguments, item_arguments
        self.compute_backend = compute_backend
        self.run_id: int | None = None
        self._config: DatabricksConfig | None = None

    def execute(self, context: Context) -> dict:
        from esteira.compute.backend import resolve_backend
        from esteira.compute.job import StepJob
        from esteira.config import get_settings, get_usecase, load_usecase

        settings = get_settings()
        yaml_path = self.usecase.endswith((".yaml", ".yml"))
        uc = load_usecase(self.usecase) if yaml_path else get_usecase(self.usecase, settings)
        param = self.compute_backend or context["params"].get("compute_backend")
        backend = resolve_backend(self.step, uc, param, settings)
        job = StepJob(self.step, self.usecase, self._job_arguments(context))
        self.log.info("step %s of %s runs on the %s backend", self.step, self.usecase, backend)
        if backend == "local":
            from esteira.compute.local import LocalBackend

            return skip_if_nothing(LocalBackend().run(job))
        return self._execute_databricks(context, job)

    def _job_arguments(self, context: Context) -> dict:
        ti = context["ti"]

        def iso(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            **(self.arguments or {}),
            **(self.item_arguments or {}),
            "params": dict(context["params"]),
            "airflow": {
                "dag_id": ti.dag_id,
                "run_id": ti.run_id,
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "try_number": ti.try_number,
            },
            "data_interval": {
                "start": iso(context.get("data_interval_start")),
                "end": iso(context.get("data_interval_end")),
            },
        }

    def _remote(self) -> DatabricksBackend:
        from esteira.compute.databricks import DatabricksBackend, DatabricksConfig

        if self._config is None:
            self._config = DatabricksConfig.from_env()
        return DatabricksBackend(self._config)

    def _execute_databricks(self, context: Context, job: StepJob) -> dict:
        from esteira.compute.databricks import idempotency_token

        remote, ti = self._remote(), context["ti"]
        store = context.get("task_state_store")
        previous = store.get(STATE_KEY) if store is not None else None
        if previous:
            run_id = previous.get("run_id") or remote.submit(job, previous["token"])
            state = remote.state(run_id)
            if state is not None and not state.is_terminal:
                self.log.info("reattaching to Databricks run %s of an earlier try (%s)", run_id, state.life_cycle_state)
                return self._follow(context, remote, run_id)
            if state is not None and state.is_successful:
                self.log.info("Databricks run %s of an earlier try succeeded: taking its result", run_id)
                return self._complete(context, remote, run_id, state, [])
            ended = f"{state.life_cycle_state}/{state.result_state}" if state is not None else "gone"
            self.log.warning("Databricks run %s of an earlier try is %s: submitting a new run", run_id, ended)
        token = idempotency_token(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number)
        if store is not None:
            store.set(STATE_KEY, {"token": token})
        run_id = remote.submit(job, token, run_name=f"{ti.dag_id}.{ti.task_id}[{ti.map_index}] try {ti.try_number}")
        if store is not None:
            store.set(STATE_KEY, {"token": token, "run_id": run_id})
        return self._follow(context, remote, run_id)

    def _follow(self, context: Context, remote: DatabricksBackend, run_id: int) -> dict:
        """Defer until the run ends (or finish now if it already has)."""
        from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger

        self.run_id = run_id
        url = remote.run_page_url(run_id)
        ti = context["ti"]
        ti.xcom_push(key="databricks_run_id", value=run_id)
        ti.xcom_push(key=RUN_PAGE_KEY, value=url)
        ti.xcom_push(key=DatabricksRunLink().xcom_key, value=url)
        self.log.info("Databricks run %s: %s", run_id, url)
        state = remote.state(run_id)
        if state is not None and state.is_terminal:
            return self._complete(context, remote, run_id, state, remote.errors(run_id))
        config = remote.config
        self.defer(
            trigger=DatabricksExecutionTrigger(
                run_id=run_id,
                databricks_conn_id=config.conn_id,
                polling_period_seconds=config.poll_seconds,
                run_page_url=url,
            ),
            method_name="execute_complete",
            # Databricks enforces timeout_seconds; this only bounds a lost trigger.
            timeout=dt.timedelta(seconds=config.timeout_seconds + 600) if config.timeout_seconds else None,
        )

    def execute_complete(self, context: Context, event: dict) -> dict:
        from airflow.providers.databricks.hooks.databricks import RunState

        self.run_id = int(event["run_id"])
        state = RunState.from_json(event["run_state"])
        return self._complete(context, self._remote(), self.run_id, state, event.get("errors") or [])

    def _complete(
        self, context: Context, remote: DatabricksBackend, run_id: int, state: RunState, errors: list
    ) -> dict:
        from esteira.compute.databricks import StepFailed, describe_failure

        if not state.is_successful:
            raise StepFailed(describe_failure(run_id, state, errors, remote.run_page_url(run_id)))
        result = remote.result(run_id)
        store = context.get("task_state_store")
        if store is not None:
            store.delete(STATE_KEY)
        return skip_if_nothing(result)

    def on_kill(self) -> None:
        if self.run_id is not None:
            self.log.info("task killed: cancelling Databricks run %s", self.run_id)
            self._remote().cancel(self.run_id)
