"""
### Feature refresh

Reads the interval's raw daily files from the landing folder, validates them against the
schema in the use-case YAML (bad rows go to the quarantine table with the reason), computes
the declared features and merges them into the Delta feature table, keyed by entity and
event time, so a rerun of an interval changes nothing. Emits the features Asset with the
table URI and Delta version for training.

Scheduled daily; trigger by hand with `interval_start` / `interval_end` to backfill a range.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from esteira.orchestration import assets
from esteira.orchestration.factory import build_for_usecases, dag_kwargs, test_main
from esteira.orchestration.params import interval_params


def feature_refresh(uc):
    features = assets.features(uc)

    @dag(schedule=uc.schedule, params=interval_params(), **dag_kwargs(uc, "feature_refresh", __doc__))
    def _dag():
        @task(outlets=[features])
        def refresh_features(**context):
            from esteira.config import get_settings
            from esteira.features.refresh import refresh_features as refresh
            from esteira.orchestration.interval import resolve_interval
            from esteira.orchestration.references import to_reference

            start, end = resolve_interval(context["params"], context)
            result = refresh(uc, get_settings(), start, end, run_id=context["run_id"])
            reference = to_reference(result)
            context["outlet_events"][features].extra = reference
            return reference

        refresh_features()

    return _dag()


build_for_usecases(feature_refresh, globals())

if __name__ == "__main__":
    test_main(feature_refresh)
