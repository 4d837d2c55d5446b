"""The contract between a caller and a step's entry point: argv in, one result line out.

A step receives ``--usecase <name or YAML path> --arguments <JSON>`` and prints its
result reference as one line ``ESTEIRA_RESULT <JSON>`` on stdout. On Databricks that line
comes back through ``runs/get-output`` (``logs``, the last 5 MB of a ``spark_python_task``'s
stdout, so the final line is always kept): no storage to share between Airflow and the
cluster, no extra permissions, and the same route works against any Jobs API endpoint.
``dbutils.notebook.exit`` is not available to a ``spark_python_task``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from esteira.results import StageResult, from_json, to_json
from esteira.usecase import UseCase

RESULT_MARKER = "ESTEIRA_RESULT "


class JobOutputError(RuntimeError):
    """A finished job did not report a result line."""


@dataclass(frozen=True)
class StepJob:
    """One invocation of a step: which step, which use case, its JSON arguments."""

    step: str
    usecase: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def argv(self) -> list[str]:
        return ["--usecase", self.usecase, "--arguments", json.dumps(self.arguments, sort_keys=True)]

    @classmethod
    def from_argv(cls, step: str, argv: list[str]) -> StepJob:
        parser = argparse.ArgumentParser(prog=f"esteira.jobs.{step}")
        parser.add_argument("--usecase", required=True, help="use-case name, or the path of its YAML file")
        parser.add_argument("--arguments", default="{}", help="the step's arguments as a JSON object")
        parsed = parser.parse_args(argv)
        arguments = json.loads(parsed.arguments)
        if not isinstance(arguments, dict):
            parser.error("--arguments must be a JSON object")
        return cls(step, parsed.usecase, arguments)

    def load_usecase(self) -> UseCase:
        """By name from ESTEIRA_USECASES_DIR, or from a YAML path."""
        from esteira.config import get_usecase, load_usecase

        if self.usecase.endswith((".yaml", ".yml")):
            return load_usecase(self.usecase)
        return get_usecase(self.usecase)


def result_line(result: StageResult) -> str:
    return RESULT_MARKER + json.dumps(to_json(result), sort_keys=True)


def parse_result(logs: str) -> StageResult:
    """The result of the last ``ESTEIRA_RESULT`` line in a job's stdout."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_MARKER):
            return from_json(json.loads(line[len(RESULT_MARKER):]))
    raise JobOutputError("the job's output has no ESTEIRA_RESULT line")


def run_main(step: str, run: Callable[[StepJob], StageResult], argv: list[str] | None) -> int:
    """What every ``esteira.jobs.<step>.main`` does; errors propagate so the run fails with them."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    job = StepJob.from_argv(step, sys.argv[1:] if argv is None else argv)
    print(result_line(run(job)), flush=True)
    return 0
