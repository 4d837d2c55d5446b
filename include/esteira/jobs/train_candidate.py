"""Entry point of one candidate's training: ``train_candidate.py --usecase churn --arguments '{...}'``.

Arguments: ``params`` (the run's Params), ``candidate`` (family and hyperparameters),
``training`` (the training-set reference with its Delta versions and the parent MLflow
run) and ``airflow`` (lineage tags). Prints the CandidateResult as a dict.
"""

from __future__ import annotations

import sys

from esteira.compute.job import StepJob, run_main

STEP = "train_candidate"


def run(job: StepJob) -> dict:
    from esteira.stages.model_training import TrainingOptions, run_candidate

    arguments = job.arguments
    return run_candidate(
        job.load_usecase(), TrainingOptions.from_params(arguments.get("params") or {}),
        arguments["candidate"], arguments["training"], arguments.get("airflow") or {},
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(STEP, run, argv)


if __name__ == "__main__":
    sys.exit(main())
