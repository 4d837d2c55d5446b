"""Registering challengers, approvals, compare-and-set promotion, rollback and history.

Only aliases (``champion``, ``challenger``) and tags: never the deprecated stages. Every
alias change happens under ``registry_lock`` and appends one event to the registered
model's tags (``esteira.event.<seq>``), from which ``history`` reads the audit trail.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from esteira.evaluation.result import GateResult
from esteira.registry.lock import registry_lock
from esteira.training.tracking import lineage_dict
from esteira.usecase import UseCase

CHAMPION = "champion"
CHALLENGER = "challenger"
EVENT_PREFIX = "esteira.event."


class RegistryError(RuntimeError):
    """A registry transition was refused; the message says why."""


class ChampionMoved(RegistryError):
    """The champion is no longer the version the gate compared against."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _version_or_none(value: str | int | None) -> int | None:
    return None if value in (None, "", "none") else int(value)


def get_alias_version(uc: UseCase, alias: str) -> int | None:
    """The version an alias points at, or None (no such alias or no registered model)."""
    try:
        model = MlflowClient().get_registered_model(uc.model_name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    return _version_or_none(model.aliases.get(alias))


def _append_event(client: MlflowClient, name: str, event: Mapping[str, Any]) -> None:
    """Call under the registry lock: the sequence number is the count of earlier events."""
    tags = client.get_registered_model(name).tags
    seq = sum(1 for key in tags if key.startswith(EVENT_PREFIX)) + 1
    record = {"seq": seq, "at": _now(), **event}
    client.set_registered_model_tag(name, f"{EVENT_PREFIX}{seq:06d}", json.dumps(record))


def _existing_version(client: MlflowClient, name: str, run_id: str):
    try:
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    return min(found, key=lambda v: int(v.version)) if found else None


def register_challenger(
    uc: UseCase,
    run_id: str,
    model_uri: str,
    lineage: Mapping[str, Any],
    gate: GateResult | Mapping[str, Any],
) -> int:
    """Register the winning run's model as a new version and point ``challenger`` at it.

    Tags record the lineage (feature table URI and Delta version, dataset digest), the run
    ids, the Airflow dag_id/run_id (copied from the training run) and the gate's result,
    including ``gate_compared_champion``: the version promotion must still find as champion.
    A retry for the same run reuses its version. A gate that blocks raises RegistryError.
    """
    gate = gate if isinstance(gate, GateResult) else GateResult.from_dict(gate)
    if not gate.passed:
        raise RegistryError(f"the gate rejected run {run_id}: nothing to register")
    client = MlflowClient()
    name = uc.model_name
    run = client.get_run(run_id)
    lineage = lineage_dict(lineage)
    tags = {
        "feature_table_uri": lineage["table_uri"],
        "feature_table_version": lineage["version"],
        "lineage": json.dumps(lineage, sort_keys=True),
        "dataset_digest": gate.dataset_digest or run.data.tags.get("esteira.dataset_digest.test"),
        "run_id": run_id,
        "parent_run_id": run.data.tags.get("mlflow.parentRunId", ""),
        "airflow_dag_id": run.data.tags.get("airflow.dag_id", ""),
        "airflow_run_id": run.data.tags.get("airflow.run_id", ""),
        "config_sha256": run.data.tags.get("esteira.config_sha256", ""),
        "git_commit": run.data.tags.get("mlflow.source.git.commit", ""),
        "gate_mode": gate.mode,
        "gate_verdict": gate.verdict,
        "gate_passed": str(gate.passed).lower(),
        "gate_reasons": json.dumps(gate.reasons),
        "gate_metrics": json.dumps(gate.candidate_metrics, sort_keys=True),
        "gate_compared_champion": str(gate.champion_version or "none"),
    }
    tags = {k: str(v) for k, v in tags.items() if v is not None}
    existing = _existing_version(client, name, run_id)
    if existing is not None:
        version = int(existing.version)
    else:
        version = int(mlflow.register_model(model_uri, name, tags=tags).version)
    with registry_lock(name):
        previous = get_alias_version(uc, CHALLENGER)
        if previous != version:
            client.set_registered_model_alias(name, CHALLENGER, str(version))
            _append_event(
                client,
                name,
                {
                    "action": "register_challenger",
                    "alias": CHALLENGER,
                    "version": version,
                    "previous": previous,
                    "actor": tags["airflow_dag_id"] or "esteira",
                    "reason": f"gate {gate.verdict} ({gate.mode}) for run {run_id}",
                },
            )
    return version


def record_approval(uc: UseCase, version: int, approver: str, reason: str, decision: str) -> None:
    """Record a human decision (``approved`` or ``rejected``) on a version."""
    if decision not in ("approved", "rejected"):
        raise ValueError(f"decision must be 'approved' or 'rejected', not {decision!r}")
    client = MlflowClient()
    name = uc.model_name
    for key, value in {
        "approval_decision": decision,
        "approved_by" if decision == "approved" else "rejected_by": approver,
        "approval_reason": reason,
        "approval_at": _now(),
    }.items():
        client.set_model_version_tag(name, str(version), key, value)
    with registry_lock(name):
        _append_event(
            client,
            name,
            {
                "action": f"approval_{decision}",
                "alias": None,
                "version": version,
                "previous": None,
                "actor": approver,
                "reason": reason,
            },
        )


def promote(
    uc: UseCase, version: int, expected_champion: int | None, actor: str, reason: str
) -> int | None:
    """Move ``champion`` to ``version`` only if it still points at ``expected_champion``.

    The check and the move happen under the registry lock (see ``registry.lock``). Tags
    ``previous_champion`` and the promotion audit on the version; removes ``challenger``
    when it points at this version. A retry after success is a no-op. Returns the previous
    champion. Raises ChampionMoved when someone moved the champion meanwhile.
    """
    client = MlflowClient()
    name = uc.model_name
    with registry_lock(name):
        tags = client.get_model_version(name, str(version)).tags
        current = get_alias_version(uc, CHAMPION)
        if current == version and _version_or_none(tags.get("previous_champion")) == expected_champion:
            return expected_champion
        if current != expected_champion:
            raise ChampionMoved(
                f"model '{name}': champion is version {current}, but promoting version {version} "
                f"expected version {expected_champion} (the one its gate compared against); "
                "someone moved the champion meanwhile. Run the gate against the current "
                "champion before promoting."
            )
        if tags.get("approval_decision") == "rejected":
            raise RegistryError(f"model '{name}' version {version} was rejected by a reviewer")
        client.set_registered_model_alias(name, CHAMPION, str(version))
        for key, value in {
            "previous_champion": str(current or "none"),
            "promoted_by": actor,
            "promotion_reason": reason,
            "promoted_at": _now(),
        }.items():
            client.set_model_version_tag(name, str(version), key, value)
        if get_alias_version(uc, CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        _append_event(
            client,
            name,
            {
                "action": "promote",
                "alias": CHAMPION,
                "version": version,
                "previous": current,
                "actor": actor,
                "reason": reason,
            },
        )
    return current


def rollback(uc: UseCase, to_version: int, actor: str, reason: str) -> int | None:
    """Point ``champion`` back at an earlier version whose gate passed; returns the version
    it replaced. The version gets ``rolled_back_by``, ``rollback_reason``, ``rolled_back_at``
    and ``rolled_back_from`` tags, and the history an event."""
    if not actor or not reason:
        raise ValueError("a rollback needs an actor and a reason (the audit trail)")
    client = MlflowClient()
    name = uc.model_name
    with registry_lock(name):
        try:
            tags = client.get_model_version(name, str(to_version)).tags
        except MlflowException as exc:
            raise RegistryError(f"model '{name}' has no version {to_version}") from exc
        if tags.get("gate_verdict") != "passed":
            raise RegistryError(
                f"model '{name}' version {to_version} cannot become champion again: its gate "
                f"verdict is {tags.get('gate_verdict', 'unknown')!r}, not 'passed'"
            )
        current = get_alias_version(uc, CHAMPION)
        client.set_registered_model_alias(name, CHAMPION, str(to_version))
        for key, value in {
            "rolled_back_by": actor,
            "rollback_reason": reason,
            "rolled_back_at": _now(),
            "rolled_back_from": str(current or "none"),
        }.items():
            client.set_model_version_tag(name, str(to_version), key, value)
        _append_event(
            client,
            name,
            {
                "action": "rollback",
                "alias": CHAMPION,
                "version": to_version,
                "previous": current,
                "actor": actor,
                "reason": reason,
            },
        )
    return current


def history(uc: UseCase) -> list[dict[str, Any]]:
    """The alias and approval events of the model, oldest first."""
    try:
        tags = MlflowClient().get_registered_model(uc.model_name).tags
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return []
        raise
    events = [json.loads(v) for k, v in tags.items() if k.startswith(EVENT_PREFIX)]
    return sorted(events, key=lambda e: e["seq"])
