"""
### Feature refresh

Reads the interval's raw daily files from the landing folder, validates them against the
schema in the use-case YAML (bad rows go to the quarantine table with the reason), computes
the declared features and merges them into the Delta feature table, keyed by entity and
event time, so a rerun of an interval changes nothing. Emits the features Asset with the
table URI and Delta version for training. Before the event, in the Airflow worker: with
`tables:` in the use case the tables are registered (or kept current) in Unity Catalog, and
with `online:` the latest row per entity is materialized into the online store.

Scheduled daily; trigger by hand with `interval_start` / `interval_end` to backfill a range,
and `notify_downstream` off when the new rows should not start a training run.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from esteira.orchestration import assets
from esteira.orchestration.factory import build_for_usecases, dag_kwargs, test_main
from esteira.orchestration.operator import EsteiraStepOperator
from esteira.orchestration.params import compute_backend_param, interval_params


def feature_refresh(uc):
    features = assets.features(uc)

    params = {
        **interval_params(),
        "compute_backend": compute_backend_param(uc.compute.feature_refresh, "features are computed"),
        "notify_downstream": Param(
            True, type="boolean", title="Notify downstream",
            description="Emit the features Asset event, which starts model training. Off for quiet backfills.",
        ),
    }

    @dag(schedule=uc.schedule, params=params, **dag_kwargs(uc, "feature_refresh", __doc__))
    def _dag():
        # esteira.jobs.feature_refresh, in the worker or as a Databricks run (Param compute_backend)
        refresh_features = EsteiraStepOperator(task_id="refresh_features", step="feature_refresh", usecase=uc.name)

        @task(outlets=[features])
        def publish_features(reference: dict, **context) -> dict:
            from esteira.orchestration.context import publish
            from esteira.results import NothingToDo
            from esteira.stages.feature_refresh import publish as publish_tables

            reference = publish_tables(uc, reference)
            if not context["params"]["notify_downstream"]:
                return publish(context, features, NothingToDo("notify_downstream is off: no features event, no training"))
            return publish(context, features, reference)

        publish_features(refresh_features.output)

    return _dag()


build_for_usecases(feature_refresh, globals())

if __name__ == "__main__":
    test_main(feature_refresh)
