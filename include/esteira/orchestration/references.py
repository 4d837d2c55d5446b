"""XCom and Asset metadata carry references, never data (STYLE.md rule 6)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any


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
