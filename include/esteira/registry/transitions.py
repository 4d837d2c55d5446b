"""Registering challengers, approvals, compare-and-set promotion, rollback and history.

Only aliases (``champion``, ``challenger``) and tags: never the deprecated stages. Each
transition is one step under ``registry_lock``: it reads the alias, the version's tags and
the audit trail, then writes what is missing, in the order alias, version tags, audit event
(``esteira.event.<seq>`` on the registered model, from which ``history`` reads). MLflow
writes them one request at a time, so a crash or an unreachable server can stop a
transition between two of them; the retry re-reads under the lock and completes the rest,
keyed by the run id for a registration, the version and the decision for an approval, and
the challenger version for a promotion, so nothing is written twice. What the lock
guarantees, and where it does not, is in ``registry.lock``; the ``checkpoint`` calls name
the points between two writes where the tests inject their faults.

The tags are written and read through the typed records of ``registry.lineage``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from esteira import tracking
from esteira.evaluation.result import ChampionRef, GateResult
from esteira.registry.lineage import (
    ApprovalRecord,
    AuditEvent,
    PromotionRecord,
    RollbackRecord,
    VersionRecord,
    audit_trail,
    next_seq,
)
from esteira.registry.lock import checkpoint, registry_lock
from esteira.usecase import UseCase

CHAMPION = "champion"
CHALLENGER = "challenger"


class RegistryError(RuntimeError):
    """A registry transition was refused; the message says why."""


class ChampionMoved(RegistryError):
    """The champion is no longer the version the gate compared against."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def get_alias_version(uc: UseCase, alias: str) -> int | None:
    """The version an alias points at, or None (no such alias or no registered model)."""
    try:
        model = tracking.client().get_registered_model(uc.model_name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    return _alias(model.aliases, alias)


def _alias(aliases: Mapping[str, Any], alias: str) -> int | None:
    version = aliases.get(alias)
    return None if version in (None, "") else int(version)


def current_champion(uc: UseCase) -> ChampionRef | None:
    """The champion to hand the gate, or None before the first promotion."""
    return ChampionRef.registered(uc.model_name, get_alias_version(uc, CHAMPION))


class _Model:
    """A registered model as one transition reads it under the lock (its aliases and audit
    trail), and the writes of that transition; no other transition writes meanwhile."""

    def __init__(self, client: MlflowClient, name: str) -> None:
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            aliases, tags = {}, {}
        else:
            aliases, tags = model.aliases, model.tags
        self.client, self.name = client, name
        self.champion, self.challenger = _alias(aliases, CHAMPION), _alias(aliases, CHALLENGER)
        self.trail: list[AuditEvent] = audit_trail(tags)
        self._seq = next_seq(tags)

    def version(self, version: int) -> VersionRecord:
        return VersionRecord.from_tags(self.client.get_model_version(self.name, str(version)).tags)

    def move(self, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(self.name, alias, str(version))

    def tag(self, version: int, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, value)

    def append(
        self, action: str, alias: str | None, version: int | None, previous: int | None,
        actor: str, reason: str,
    ) -> None:
        """One audit event; its sequence number is the count of earlier events."""
        event = AuditEvent(self._seq, _now(), action, alias, version, previous, actor, reason)
        self.client.set_registered_model_tag(self.name, event.tag_key, event.to_json())
        self.trail.append(event)
        self._seq += 1

    def last_move(self, alias: str) -> AuditEvent | None:
        """The newest event that moved ``alias``."""
        return next((e for e in reversed(self.trail) if e.alias == alias), None)

    def recorded_challenger(self) -> int | None:
        """Where the trail says ``challenger`` points: its last registration, unless that
        version was promoted since (promotion removes the alias)."""
        last = self.last_move(CHALLENGER)
        if last is None:
            return None
        promoted = any(
            e.action == "promote" and e.version == last.version and e.seq > last.seq for e in self.trail
        )
        return None if promoted else last.version


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
    Keyed by the run id: a retry reuses the run's version and adds only what an earlier
    attempt left out (tags, the alias, the audit event). A gate that blocks raises
    RegistryError.
    """
    gate = gate if isinstance(gate, GateResult) else GateResult.from_dict(gate)
    if not gate.passed:
        raise RegistryError(f"the gate rejected run {run_id}: nothing to register")
    client = tracking.client()
    name = uc.model_name
    tags = VersionRecord.registration(run_id, client.get_run(run_id).data.tags, lineage, gate).to_tags()
    with registry_lock(name):
        existing = _existing_version(client, name, run_id)
        checkpoint("register.checked")
        if existing is None:
            version = int(mlflow.register_model(model_uri, name, tags=tags).version)
            checkpoint("register.version_created")
        else:
            version = int(existing.version)
        model = _Model(client, name)
        if existing is not None:
            model.tag(version, {k: v for k, v in tags.items() if k not in existing.tags})
        if model.challenger != version:
            previous = model.challenger
            model.move(CHALLENGER, version)
            checkpoint("register.alias_moved")
        else:
            previous = model.recorded_challenger()
        if not any(e.action == "register_challenger" and e.version == version for e in model.trail):
            model.append(
                "register_challenger", CHALLENGER, version, None if previous == version else previous,
                actor=tags.get("airflow_dag_id") or "esteira",
                reason=f"gate {gate.verdict} ({gate.mode}) for run {run_id}",
            )
    return version


def record_approval(uc: UseCase, version: int, approver: str, reason: str, decision: str) -> None:
    """Record a human decision (``approved`` or ``rejected``) on a version.

    One step under the lock with ``promote``, so a decision is either seen by a promotion
    or comes after it; a rejection of the version that is already champion is refused
    (roll back instead). Keyed by (version, decision, approver, reason): a retry writes
    only what is missing.
    """
    if decision not in ("approved", "rejected"):
        raise ValueError(f"decision must be 'approved' or 'rejected', not {decision!r}")
    client = tracking.client()
    name = uc.model_name
    with registry_lock(name):
        model = _Model(client, name)
        recorded = model.version(version).approval
        if decision == "rejected" and model.champion == version:
            raise RegistryError(
                f"model '{name}' version {version} is already champion: a rejection now changes "
                "nothing; roll back to an earlier version instead"
            )
        if recorded is None or (recorded.decision, recorded.by, recorded.reason) != (
            decision, approver, reason
        ):
            model.tag(version, ApprovalRecord(decision, approver, reason, at=_now()).to_tags())
            checkpoint("approval.tagged")
        last = next((e for e in reversed(model.trail)
                     if e.action.startswith("approval_") and e.version == version), None)
        if last is None or (last.action, last.actor, last.reason) != (f"approval_{decision}", approver, reason):
            model.append(f"approval_{decision}", None, version, None, approver, reason)


def promote(
    uc: UseCase, version: int, expected_champion: int | None, actor: str, reason: str
) -> int | None:
    """Move ``champion`` to ``version`` only if it still points at ``expected_champion``.

    The check and the move are one step under the registry lock (see ``registry.lock``).
    Tags ``previous_champion`` and the promotion audit on the version; removes
    ``challenger`` when it points at this version; appends the ``promote`` event. Keyed by
    the challenger version: when ``champion`` already points at it, a retry completes what
    an earlier attempt left out (tags, the challenger alias, the event) and changes nothing
    after a complete one. Returns the previous champion. Raises ChampionMoved when someone
    moved the champion meanwhile, RegistryError when a reviewer rejected the version.
    """
    client = tracking.client()
    name = uc.model_name
    with registry_lock(name):
        model = _Model(client, name)
        record = model.version(version)
        checkpoint("promote.checked")
        fresh = model.champion != version
        if fresh:
            if model.champion != expected_champion:
                raise ChampionMoved(
                    f"model '{name}': champion is version {model.champion}, but promoting version "
                    f"{version} expected version {expected_champion} (the one its gate compared "
                    "against); someone moved the champion meanwhile. Run the gate against the "
                    "current champion before promoting."
                )
            if record.rejected:
                raise RegistryError(f"model '{name}' version {version} was rejected by a reviewer")
            model.move(CHAMPION, version)
            checkpoint("promote.alias_moved")
        else:
            last = model.last_move(CHAMPION)
            if last is not None and last.version == version:
                return last.previous
        if fresh or record.promotion is None or record.promotion.previous_champion != expected_champion:
            model.tag(version, PromotionRecord(expected_champion, actor, reason, at=_now()).to_tags())
            checkpoint("promote.tagged")
        if model.challenger == version:
            client.delete_registered_model_alias(name, CHALLENGER)
            checkpoint("promote.challenger_removed")
        model.append("promote", CHAMPION, version, expected_champion, actor, reason)
    return expected_champion


def rollback(uc: UseCase, to_version: int, actor: str, reason: str) -> int | None:
    """Point ``champion`` back at an earlier version whose gate passed; returns the version
    it replaced. The version gets ``rolled_back_by``, ``rollback_reason``, ``rolled_back_at``
    and ``rolled_back_from`` tags, and the history an event. A retry after the alias moved
    completes the tags and the event, the replaced version read from the audit trail."""
    if not actor or not reason:
        raise ValueError("a rollback needs an actor and a reason (the audit trail)")
    client = tracking.client()
    name = uc.model_name
    with registry_lock(name):
        model = _Model(client, name)
        try:
            record = model.version(to_version)
        except MlflowException as exc:
            raise RegistryError(f"model '{name}' has no version {to_version}") from exc
        if record.gate_verdict != "passed":
            raise RegistryError(
                f"model '{name}' version {to_version} cannot become champion again: its gate "
                f"verdict is {record.gate_verdict!r}, not 'passed'"
            )
        last = model.last_move(CHAMPION)
        fresh = model.champion != to_version
        if fresh:
            previous = model.champion
            model.move(CHAMPION, to_version)
            checkpoint("rollback.alias_moved")
        elif last is not None and last.version == to_version:
            return last.previous
        else:
            previous = last.version if last is not None else None
        if fresh or record.rollback is None or record.rollback.from_version != previous:
            model.tag(to_version, RollbackRecord(actor, reason, at=_now(), from_version=previous).to_tags())
            checkpoint("rollback.tagged")
        model.append("rollback", CHAMPION, to_version, previous, actor, reason)
    return previous


DECISIONS = ("gate_rejected", "gate_nothing_new", "approval_timeout", "deploy_failed")


def record_decision(uc: UseCase, action: str, version: int | None, actor: str, reason: str) -> None:
    """Append a decision that moves no alias (one of ``DECISIONS``) to the audit trail.

    ``version`` is None for a gate decision (nothing was registered); the registered model is
    created when this is the use case's first decision. Recorded once: a retried task that
    records the same action, version and reason changes nothing.
    """
    if action not in DECISIONS:
        raise ValueError(f"action must be one of {', '.join(DECISIONS)}, not {action!r}")
    client = tracking.client()
    name = uc.model_name
    _ensure_registered_model(client, name)
    with registry_lock(name):
        model = _Model(client, name)
        if any((e.action, e.version, e.reason) == (action, version, reason) for e in model.trail):
            return
        model.append(action, None, version, None, actor, reason)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        try:
            client.create_registered_model(name)
        except MlflowException as again:
            if again.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise


def audit_events(uc: UseCase) -> list[AuditEvent]:
    """The alias and approval events of the model, oldest first (none before it exists)."""
    return _Model(tracking.client(), uc.model_name).trail


def history(uc: UseCase) -> list[dict[str, Any]]:
    """``audit_events`` as plain dicts (the CLI's and the tests' view)."""
    return [event.to_dict() for event in audit_events(uc)]
