"""
### Drift monitoring

Compares the window's served and batch-scored feature rows with the champion's training
data (read at the exact Delta version recorded in its lineage) using an Evidently
`DataDriftPreset` report, and, once labels have arrived, the model's quality with its test
metrics. Results go to the `monitoring` Delta table and the HTML report to MLflow. The
retraining rule in the use-case YAML (N breaching windows of the last M, with a cooldown)
turns sustained breaches into a retraining request for `model_training`.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from esteira.orchestration import assets
from esteira.orchestration.factory import build_for_usecases, dag_kwargs, test_main
from esteira.orchestration.params import interval_params


def drift_monitoring(uc):
    retraining = assets.retraining_request(uc)

    @dag(schedule=uc.schedule, params=interval_params(), **dag_kwargs(uc, "drift_monitoring", __doc__))
    def _dag():
        @task
        def monitor_window(**context) -> dict:
            from esteira.orchestration.context import window
            from esteira.stages.drift_monitoring import monitor

            return monitor(uc, window(context), context["run_id"])

        @task(outlets=[retraining])
        def request_retraining(outcome: dict, **context) -> dict:
            from esteira.orchestration.context import publish
            from esteira.stages.drift_monitoring import retraining_request

            return publish(context, retraining, retraining_request(outcome))

        request_retraining(monitor_window())

    return _dag()


build_for_usecases(drift_monitoring, globals())

if __name__ == "__main__":
    test_main(drift_monitoring)
