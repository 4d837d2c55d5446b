"""
### Batch inference

Scores the interval's feature rows with `models:/<model>@champion` (the concrete version is
resolved and recorded) and merges the predictions into the `predictions` Delta table, keyed
so that a rerun changes nothing. Runs daily, and again whenever a new champion is promoted.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from esteira.orchestration import assets
from esteira.orchestration.factory import build_for_usecases, dag_kwargs, test_main
from esteira.orchestration.params import interval_params


def batch_inference(uc):
    champion, predictions = assets.champion(uc), assets.predictions(uc)
    schedule = AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(uc.schedule, timezone="UTC"), assets=[champion]
    )

    @dag(schedule=schedule, params=interval_params(), **dag_kwargs(uc, "batch_inference", __doc__))
    def _dag():
        @task(outlets=[predictions])
        def score_batch(**context) -> dict:
            from esteira.orchestration.context import publish, window
            from esteira.stages.batch_inference import score

            return publish(context, predictions, score(uc, window(context), context["run_id"]))

        score_batch()

    return _dag()


build_for_usecases(batch_inference, globals())

if __name__ == "__main__":
    test_main(batch_inference)
