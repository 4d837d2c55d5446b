"""
### Batch inference

Scores the interval's feature rows with `models:/<model>@champion` (the concrete version is
resolved and recorded) and merges the predictions into the `predictions` Delta table, keyed
so that a rerun changes nothing. Runs daily, and again whenever a new champion is promoted.
Scoring runs in the worker or, with `compute_backend` (or `compute.batch_inference`)
`databricks`, as a Databricks run; with `tables:` the predictions table is then registered in
Unity Catalog before the predictions Asset event.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from esteira.orchestration import assets
from esteira.orchestration.factory import build_for_usecases, dag_kwargs, test_main
from esteira.orchestration.operator import EsteiraStepOperator
from esteira.orchestration.params import compute_backend_param, interval_params


def batch_inference(uc):
    champion, predictions = assets.champion(uc), assets.predictions(uc)
    schedule = AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(uc.schedule, timezone="UTC"), assets=[champion]
    )

    params = {
        **interval_params(),
        "compute_backend": compute_backend_param(uc.compute.batch_inference, "the rows are scored"),
    }

    @dag(schedule=schedule, params=params, **dag_kwargs(uc, "batch_inference", __doc__))
    def _dag():
        # esteira.jobs.batch_inference, in the worker or as a Databricks run (Param compute_backend)
        score_batch = EsteiraStepOperator(task_id="score_batch", step="batch_inference", usecase=uc.name)

        @task(outlets=[predictions])
        def publish_predictions(reference: dict, **context) -> dict:
            from esteira.orchestration.context import publish
            from esteira.stages.batch_inference import register_tables

            return publish(context, predictions, register_tables(uc, reference))

        publish_predictions(score_batch.output)

    return _dag()


build_for_usecases(batch_inference, globals())

if __name__ == "__main__":
    test_main(batch_inference)
