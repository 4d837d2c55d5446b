"""Params shared by several stages, so the trigger forms look alike, and the JSON schemas that
make Airflow's trigger form render a Param as an editor a person can use.

Airflow 3.3's form picks a field by the schema (``FlexibleForm/FieldSelector.tsx``): an
``array`` without ``items`` or with string items is a text box of one line per item (a list
of objects shows as ``[object Object]``), an array of ``object`` items a JSON editor, a
``string`` with ``format: date`` a date picker, an ``enum`` a select.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param


def interval_params() -> dict[str, Param]:
    date = {"type": ["null", "string"], "format": "date"}
    return {
        "interval_start": Param(
            None,
            **date,
            title="Interval start",
            description="First day to process (YYYY-MM-DD). Empty: the run's data interval.",
        ),
        "interval_end": Param(
            None,
            **date,
            title="Interval end",
            description="Day after the last day to process (exclusive). Empty: the run's data interval.",
        ),
    }


def compute_backend_param(default: str | None, what: str) -> Param:
    """Where a heavy step runs; ``default`` is the use case's ``compute.<step>``."""
    return Param(default or "default", enum=["default", "local", "databricks"], title="Compute backend",
                 description=f"Where {what} ('default': ESTEIRA_COMPUTE_BACKEND).")


def candidates_schema() -> dict[str, Any]:
    """A list of ``{"family": ..., "params": {name: [values...]}}`` (``usecase.CandidateSpec``),
    shown as a JSON editor and validated by Airflow on trigger."""
    return {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["family"],
            "additionalProperties": False,
            "properties": {
                "family": {"type": "string", "minLength": 1},
                "params": {"type": "object", "additionalProperties": {"type": "array"}},
            },
        },
    }
