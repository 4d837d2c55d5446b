"""Entry point of batch scoring: ``batch_inference.py --usecase churn --arguments '{...}'``.

Arguments as for `esteira.jobs.feature_refresh`; with no window in them (a run started by
the champion's Asset event) the newest ``monitoring.window_days`` days of the feature table
are scored. Prints the scoring reference, or NothingToDo when there is no champion or no
feature row yet.
"""

from __future__ import annotations

import sys

from esteira.compute.job import StepJob, run_main
from esteira.results import StageResult

STEP = "batch_inference"


def run(job: StepJob) -> StageResult:
    from esteira.stages import batch_inference
    from esteira.stages.window import job_window

    return batch_inference.score(job.load_usecase(), job_window(job.arguments), job.arguments["airflow"]["run_id"])


def main(argv: list[str] | None = None) -> int:
    return run_main(STEP, run, argv)


if __name__ == "__main__":
    sys.exit(main())
