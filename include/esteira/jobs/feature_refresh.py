"""Entry point of the feature refresh: ``feature_refresh.py --usecase churn --arguments '{...}'``.

Arguments: ``params`` (the run's Params; ``interval_start``/``interval_end`` win),
``data_interval`` (``start``/``end`` ISO timestamps of the Airflow run, may be null) and
``airflow`` (``run_id`` recorded with quarantined rows). Prints the RefreshResult
reference, or NothingToDo when nothing was delivered for the interval yet.
"""

from __future__ import annotations

import sys

from esteira.compute.job import StepJob, run_main
from esteira.results import StageResult

STEP = "feature_refresh"


def run(job: StepJob) -> StageResult:
    from esteira.stages import feature_refresh
    from esteira.stages.window import job_window, require_window

    window = require_window(job_window(job.arguments))
    return feature_refresh.refresh(job.load_usecase(), window, job.arguments["airflow"]["run_id"])


def main(argv: list[str] | None = None) -> int:
    return run_main(STEP, run, argv)


if __name__ == "__main__":
    sys.exit(main())
