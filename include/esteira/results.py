"""What a stage returns: a reference (STYLE.md rule 6), or the one way to say "nothing to do".

A stage that finds nothing to do (no landing files yet, no champion yet, a gate rejection)
returns ``NothingToDo(reason)``; the orchestration layer turns it into a skipped task with
that reason. Across a process boundary (a Databricks run's result line) it travels as
``{"nothing_to_do": reason}``: ``to_json`` / ``from_json`` are the only two places that
know that shape.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

_NOTHING_KEY = "nothing_to_do"


@dataclasses.dataclass(frozen=True)
class NothingToDo:
    """The step had nothing to do, and says why (shown as the skip reason)."""

    reason: str


Reference = dict[str, Any]
StageResult = Reference | NothingToDo


def to_reference(value: Any) -> Any:
    """A JSON-able copy of a result dataclass: dates as ISO strings, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_reference(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_reference(v) for v in value]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def to_json(result: StageResult) -> Reference:
    """The result as a JSON object, for a job's result line."""
    if isinstance(result, NothingToDo):
        return {_NOTHING_KEY: result.reason}
    return to_reference(result)


def from_json(payload: Reference) -> StageResult:
    """The inverse of `to_json`."""
    if set(payload) == {_NOTHING_KEY}:
        return NothingToDo(str(payload[_NOTHING_KEY]))
    return payload
