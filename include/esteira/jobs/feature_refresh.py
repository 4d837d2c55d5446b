"""Entry point of the feature refresh: ``feature_refresh.py --usecase churn --arguments '{...}'``.

Arguments: ``params`` (the run's Params; ``interval_start``/``interval_end`` win),
``data_interval`` (``start``/``end`` ISO timestamps of the Airflow run, may be null) and
``airflow`` (``run_id`` recorded with quarantined rows). Prints the RefreshResult
reference, or NothingToDo when nothing was delivered for the interval yet.
"""

from __future__ import annotations

import datetime as dt
import sys

from esteira.compute.job import StepJob, run_main
from esteira.results import StageResult

STEP = "feature_refresh"


def run(job: StepJob) -> StageResult:
    from esteira.stages import feature_refresh
    from esteira.stages.window import requested_window, require_window

    arguments = job.arguments
    params = arguments.get("params") or {}
    interval = arguments.get("data_interval") or {}
    start, end = (dt.datetime.fromisoformat(interval[k]) if interval.get(k) else None for k in ("start", "end"))
    window = require_window(requested_window(params.get("interval_start"), params.get("interval_end"), start, end))
    return feature_refresh.refresh(job.load_usecase(), window, arguments["airflow"]["run_id"])


def main(argv: list[str] | None = None) -> int:
    return run_main(STEP, run, argv)


if __name__ == "__main__":
    sys.exit(main())
