"""The local backend: the step's entry point runs in this process (the Airflow worker)."""

from __future__ import annotations

import importlib
import json

from esteira.compute.job import StepJob
from esteira.results import StageResult, from_json, to_json


class LocalBackend:
    def run(self, job: StepJob) -> StageResult:
        """Call ``esteira.jobs.<step>.run`` on the arguments a remote run would parse, and
        hand back its result as the remote path would: through JSON. Both backends thus
        see and return exactly the same values."""
        module = importlib.import_module(f"esteira.jobs.{job.step}")
        result = module.run(StepJob.from_argv(job.step, job.argv()))
        return from_json(json.loads(json.dumps(to_json(result), sort_keys=True)))
