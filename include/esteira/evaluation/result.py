"""What the gate is given and what it hands on: small JSON-able records, so the gate never
asks the registry and the registry never runs the gate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["enabled", "dry_run", "disabled"]


@dataclass(frozen=True)
class ChampionRef:
    """The champion the candidate is judged against, as the caller found it in the registry.

    ``run_id`` is the training run behind it: with it the gate can tell a retrain that could
    not differ from the champion (see ``evaluation.novelty``).
    """

    version: int
    model_uri: str
    run_id: str | None = None

    @classmethod
    def registered(cls, model_name: str, version: int | None) -> ChampionRef | None:
        """``models:/<model_name>/<version>``, or None when there is no champion yet."""
        return None if version is None else cls(int(version), f"models:/{model_name}/{version}")


@dataclass(frozen=True)
class GateResult:
    """``passed``: may the candidate go on (True in dry_run and disabled, except for
    ``nothing_new``); ``verdict``: what the gate said (``passed``, ``rejected``,
    ``nothing_new`` or ``skipped``); ``thresholds``: the rules that decided, as declared."""

    passed: bool
    mode: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    table: str = ""
    champion_version: int | None = None
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    dataset_digest: str | None = None
    thresholds: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GateResult:
        return cls(**raw)
