"""The gate's result: a small JSON-able record handed from the gate to the registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["enabled", "dry_run", "disabled"]


@dataclass(frozen=True)
class GateResult:
    """``passed``: may the candidate go on (always True in dry_run/disabled);
    ``verdict``: what the thresholds said (``passed``, ``rejected``, or ``skipped``)."""

    passed: bool
    mode: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    table: str = ""
    champion_version: int | None = None
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    dataset_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GateResult:
        return cls(**raw)
