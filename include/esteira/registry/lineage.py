"""The model-version tags and the registry's audit events, as typed records that write
their tags and read them back: the one place that knows the tag keys and their formats.

A model version carries its lineage (feature table URI and Delta version, the training
set's window and labels version, the dataset digest, the runs and the Airflow run that made
it), the gate's result, and, as they happen, a human decision, a promotion and a rollback.
Each of the last three is written on its own (``ApprovalRecord(...).to_tags()``), so a step sets
only its own keys. The registered model carries the audit trail: one JSON event per alias
move or decision, under ``esteira.event.<seq>``.

Absent tags read back as None (a version registered outside Esteira has none), and
``VersionRecord.from_tags(tags).to_tags()`` gives back exactly the tags Esteira wrote.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from esteira import tracking
from esteira.config import Settings
from esteira.evaluation.result import GateResult
from esteira.usecase import UseCase

EVENT_PREFIX = "esteira.event."
_NONE = "none"


class LineageError(LookupError):
    """A model version lacks the lineage a step needs (it was not trained by Esteira)."""


def version_text(version: int | None) -> str:
    """A version as the tags write it: ``"none"`` for no version."""
    return _NONE if version is None else str(version)


def _version_or_none(raw: str | int | None) -> int | None:
    return None if raw in (None, "", _NONE) else int(raw)


def _json_or(raw: str | None, default: Any) -> Any:
    """A JSON tag's value; ``default`` when absent or not JSON (a hand-edited tag)."""
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


def _present(tags: Mapping[str, str], *keys: str) -> bool:
    return any(key in tags for key in keys)


_GATE_KEYS = (
    "gate_mode",
    "gate_verdict",
    "gate_passed",
    "gate_reasons",
    "gate_metrics",
    "gate_compared_champion",
    "gate_champion_metrics",
    "gate_thresholds",
)
_PROMOTION_KEYS = ("previous_champion", "promoted_by", "promotion_reason", "promoted_at")
_ROLLBACK_KEYS = ("rolled_back_by", "rollback_reason", "rolled_back_at", "rolled_back_from")


@dataclass(frozen=True)
class GateRecord:
    """The gate's result as the version remembers it; ``compared_champion`` is the champion
    version promotion must still find (compare-and-set), None when there was none.
    ``champion_metrics`` are that champion's on the same test set, ``thresholds`` the rules
    that decided (both absent from versions registered before they were recorded)."""

    mode: str = ""
    verdict: str = ""
    passed: bool = False
    reasons: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    compared_champion: int | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    thresholds: tuple[dict[str, Any], ...] = ()

    @classmethod
    def of(cls, result: GateResult) -> GateRecord:
        return cls(
            mode=result.mode,
            verdict=result.verdict,
            passed=result.passed,
            reasons=tuple(result.reasons),
            metrics=dict(result.candidate_metrics),
            compared_champion=result.champion_version,
            champion_metrics=dict(result.champion_metrics),
            thresholds=tuple(result.thresholds),
        )

    def to_tags(self) -> dict[str, str]:
        tags = {
            "gate_mode": self.mode,
            "gate_verdict": self.verdict,
            "gate_passed": str(self.passed).lower(),
            "gate_reasons": json.dumps(list(self.reasons)),
            "gate_metrics": json.dumps(self.metrics, sort_keys=True),
            "gate_compared_champion": version_text(self.compared_champion),
        }
        if self.champion_metrics:
            tags["gate_champion_metrics"] = json.dumps(self.champion_metrics, sort_keys=True)
        if self.thresholds:
            tags["gate_thresholds"] = json.dumps(list(self.thresholds), sort_keys=True)
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> GateRecord | None:
        if not _present(tags, *_GATE_KEYS):
            return None
        return cls(
            mode=tags.get("gate_mode", ""),
            verdict=tags.get("gate_verdict", ""),
            passed=tags.get("gate_passed") == "true",
            reasons=tuple(_json_or(tags.get("gate_reasons"), [])),
            metrics=_json_or(tags.get("gate_metrics"), {}),
            compared_champion=_version_or_none(tags.get("gate_compared_champion")),
            champion_metrics=_json_or(tags.get("gate_champion_metrics"), {}),
            thresholds=tuple(_json_or(tags.get("gate_thresholds"), [])),
        )


@dataclass(frozen=True)
class ApprovalRecord:
    """A reviewer's decision: ``approved`` or ``rejected``."""

    decision: str
    by: str
    reason: str
    at: str

    def to_tags(self) -> dict[str, str]:
        return {
            "approval_decision": self.decision,
            "approved_by" if self.decision == "approved" else "rejected_by": self.by,
            "approval_reason": self.reason,
            "approval_at": self.at,
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ApprovalRecord | None:
        decision = tags.get("approval_decision")
        if not decision:
            return None
        by = "approved_by" if decision == "approved" else "rejected_by"
        return cls(
            decision=decision,
            by=tags.get(by, ""),
            reason=tags.get("approval_reason", ""),
            at=tags.get("approval_at", ""),
        )


@dataclass(frozen=True)
class PromotionRecord:
    """The move to champion; ``previous_champion`` is the version it replaced."""

    previous_champion: int | None
    by: str
    reason: str
    at: str

    def to_tags(self) -> dict[str, str]:
        return {
            "previous_champion": version_text(self.previous_champion),
            "promoted_by": self.by,
            "promotion_reason": self.reason,
            "promoted_at": self.at,
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> PromotionRecord | None:
        if not _present(tags, *_PROMOTION_KEYS):
            return None
        return cls(
            previous_champion=_version_or_none(tags.get("previous_champion")),
            by=tags.get("promoted_by", ""),
            reason=tags.get("promotion_reason", ""),
            at=tags.get("promoted_at", ""),
        )


@dataclass(frozen=True)
class RollbackRecord:
    """The champion pointed back at this version; ``from_version`` is the one it replaced."""

    by: str
    reason: str
    at: str
    from_version: int | None

    def to_tags(self) -> dict[str, str]:
        return {
            "rolled_back_by": self.by,
            "rollback_reason": self.reason,
            "rolled_back_at": self.at,
            "rolled_back_from": version_text(self.from_version),
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> RollbackRecord | None:
        if not _present(tags, *_ROLLBACK_KEYS):
            return None
        return cls(
            by=tags.get("rolled_back_by", ""),
            reason=tags.get("rollback_reason", ""),
            at=tags.get("rolled_back_at", ""),
            from_version=_version_or_none(tags.get("rolled_back_from")),
        )


_REFERENCE_KEY = "monitoring_reference"


@dataclass(frozen=True)
class ReferenceRecord:
    """Where the version's monitoring reference is stored (an artifact of its training run:
    a seeded sample of ``sampled`` rows of the ``rows``-row training set) and its digest."""

    run_id: str
    path: str
    rows: int
    sampled: int
    seed: int
    sha256: str

    @property
    def uri(self) -> str:
        return f"runs:/{self.run_id}/{self.path}"

    def to_tags(self) -> dict[str, str]:
        return {_REFERENCE_KEY: json.dumps(dataclasses.asdict(self), sort_keys=True)}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ReferenceRecord | None:
        values = _json_or(tags.get(_REFERENCE_KEY), None)
        if not isinstance(values, dict):
            return None
        try:
            return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})
        except KeyError:
            return None


# Registration tags that are plain strings, by field name (the tag key is the same).
_PLAIN = (
    "feature_table_uri",
    "dataset_digest",
    "run_id",
    "parent_run_id",
    "airflow_dag_id",
    "airflow_run_id",
    "config_sha256",
    "git_commit",
)


@dataclass(frozen=True)
class VersionRecord:
    """Everything Esteira records on one model version. ``lineage`` is the training set's
    reference (``table_uri``, ``version``, ``labels_version``, ``start``, ``end``...)."""

    lineage: dict[str, Any] | None = None
    feature_table_uri: str | None = None
    feature_table_version: int | None = None
    dataset_digest: str | None = None
    run_id: str | None = None
    parent_run_id: str | None = None
    airflow_dag_id: str | None = None
    airflow_run_id: str | None = None
    config_sha256: str | None = None
    git_commit: str | None = None
    gate: GateRecord | None = None
    approval: ApprovalRecord | None = None
    promotion: PromotionRecord | None = None
    rollback: RollbackRecord | None = None
    reference: ReferenceRecord | None = None

    @classmethod
    def registration(
        cls, run_id: str, run_tags: Mapping[str, str], lineage: Any, gate: GateResult
    ) -> VersionRecord:
        """The record of a new version: ``lineage`` and the gate's result, with the ids the
        training run's tags carry (parent run, Airflow run, config hash, git commit)."""
        from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID

        lineage = tracking.lineage_dict(lineage)
        return cls(
            lineage=lineage,
            feature_table_uri=str(lineage["table_uri"]),
            feature_table_version=int(lineage["version"]),
            dataset_digest=gate.dataset_digest or run_tags.get(f"{tracking.DIGEST_PREFIX}test"),
            run_id=run_id,
            parent_run_id=run_tags.get(MLFLOW_PARENT_RUN_ID, ""),
            airflow_dag_id=run_tags.get(tracking.TAG_AIRFLOW_DAG_ID, ""),
            airflow_run_id=run_tags.get(tracking.TAG_AIRFLOW_RUN_ID, ""),
            config_sha256=run_tags.get(tracking.TAG_CONFIG_SHA, ""),
            git_commit=run_tags.get(MLFLOW_GIT_COMMIT, ""),
            gate=GateRecord.of(gate),
        )

    def to_tags(self) -> dict[str, str]:
        """Every recorded field as its tag; absent fields write no tag."""
        tags = {name: getattr(self, name) for name in _PLAIN if getattr(self, name) is not None}
        if self.feature_table_version is not None:
            tags["feature_table_version"] = str(self.feature_table_version)
        if self.lineage is not None:
            tags["lineage"] = json.dumps(self.lineage, sort_keys=True)
        for section in (self.gate, self.approval, self.promotion, self.rollback, self.reference):
            if section is not None:
                tags |= section.to_tags()
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> VersionRecord:
        lineage = _json_or(tags.get("lineage"), None)
        return cls(
            lineage=lineage if isinstance(lineage, dict) else None,
            feature_table_version=_version_or_none(tags.get("feature_table_version")),
            gate=GateRecord.from_tags(tags),
            approval=ApprovalRecord.from_tags(tags),
            promotion=PromotionRecord.from_tags(tags),
            rollback=RollbackRecord.from_tags(tags),
            reference=ReferenceRecord.from_tags(tags),
            **{name: tags[name] for name in _PLAIN if name in tags},
        )

    @property
    def gate_passed(self) -> bool:
        return self.gate is not None and self.gate.passed

    @property
    def gate_verdict(self) -> str:
        """``passed``, ``rejected``, ``skipped``; ``unknown`` without a gate result."""
        return self.gate.verdict if self.gate is not None and self.gate.verdict else "unknown"

    @property
    def compared_champion(self) -> int | None:
        return self.gate.compared_champion if self.gate is not None else None

    @property
    def rejected(self) -> bool:
        return self.approval is not None and self.approval.decision == "rejected"

    @property
    def feature_version(self) -> int | None:
        """The feature table's Delta version the model was trained on."""
        if self.feature_table_version is not None:
            return self.feature_table_version
        return _version_or_none((self.lineage or {}).get("version"))

    @property
    def labels_version(self) -> int | None:
        return _version_or_none((self.lineage or {}).get("labels_version"))

    @property
    def training_window(self) -> tuple[dt.datetime, dt.datetime] | None:
        """The training set's ``[start, end)``; None when the lineage does not say."""
        lineage = self.lineage or {}
        if not lineage.get("start") or not lineage.get("end"):
            return None
        start, end = (dt.datetime.fromisoformat(str(lineage[key])) for key in ("start", "end"))
        return start, end

    def window(self) -> tuple[dt.datetime, dt.datetime]:
        """The training window; raises LineageError when the lineage does not say."""
        if self.training_window is None:
            raise LineageError(
                f"the model version of run {self.run_id} has no training window in its lineage tag"
            )
        return self.training_window


def read_version(
    uc: UseCase, version: int | str, settings: Settings | None = None
) -> VersionRecord:
    """The record of ``uc``'s model version ``version``, read through the MLflow seam."""
    model_version = tracking.client(settings).get_model_version(uc.model_name, str(version))
    return VersionRecord.from_tags(model_version.tags)


def record_reference(
    uc: UseCase, version: int | str, reference: ReferenceRecord, settings: Settings | None = None
) -> None:
    """Tag ``uc``'s model version ``version`` with where its monitoring reference is."""
    client = tracking.client(settings)
    for key, value in reference.to_tags().items():
        client.set_model_version_tag(uc.model_name, str(version), key, value)


@dataclass(frozen=True)
class AuditEvent:
    """One alias move or decision on the registered model (``alias`` None for approvals)."""

    seq: int
    at: str
    action: str
    alias: str | None
    version: int | None
    previous: int | None
    actor: str
    reason: str

    @property
    def tag_key(self) -> str:
        return f"{EVENT_PREFIX}{self.seq:06d}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: str) -> AuditEvent:
        values = json.loads(raw)
        return cls(**{f.name: values.get(f.name) for f in dataclasses.fields(cls)})


def audit_trail(model_tags: Mapping[str, str]) -> list[AuditEvent]:
    """The events in a registered model's tags, oldest first."""
    events = [AuditEvent.from_json(v) for k, v in model_tags.items() if k.startswith(EVENT_PREFIX)]
    return sorted(events, key=lambda event: event.seq)


def next_seq(model_tags: Mapping[str, str]) -> int:
    """The sequence number of the next event (read and write it under the registry lock)."""
    return sum(1 for key in model_tags if key.startswith(EVENT_PREFIX)) + 1
