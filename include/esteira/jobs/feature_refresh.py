"""Entry point of the feature refresh: ``feature_refresh.py --usecase churn --arguments '{...}'``.

Arguments: ``params`` (the run's Params; ``interval_start``/``interval_end`` win),
``data_interval`` (``start``/``end`` ISO timestamps of the Airflow run, may be null) and
``airflow`` (``run_id`` recorded with quarantined rows). Prints the RefreshResult reference,
or ``{"skipped": reason}`` when nothing was delivered for the interval yet.
"""

from __future__ import annotations

import datetime as dt
import sys

from esteira.compute.job import SKIPPED, StepJob, run_main

STEP = "feature_refresh"


def run(job: StepJob) -> dict:
    from esteira.config import get_settings
    from esteira.features.refresh import NoLandingData, refresh_features
    from esteira.orchestration.interval import resolve_interval
    from esteira.orchestration.references import to_reference

    arguments = job.arguments
    interval = arguments.get("data_interval") or {}
    context = {
        f"data_interval_{key}": dt.datetime.fromisoformat(interval[key]) if interval.get(key) else None
        for key in ("start", "end")
    }
    start, end = resolve_interval(dict(arguments.get("params") or {}), context)
    try:
        result = refresh_features(
            job.load_usecase(), get_settings(), start, end, run_id=arguments["airflow"]["run_id"]
        )
    except NoLandingData as nothing:
        return {SKIPPED: str(nothing)}
    return to_reference(result)


def main(argv: list[str] | None = None) -> int:
    return run_main(STEP, run, argv)


if __name__ == "__main__":
    sys.exit(main())
