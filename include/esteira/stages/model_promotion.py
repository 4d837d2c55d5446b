"""The promotion DAG's steps: which challenger, the person's decision (approved, rejected or
no answer in time, each recorded in the registry's history), the compare-and-set move of
``champion``, then the online server's reload with a canary check (a failure is recorded too).

Every alias and tag change is one call into `esteira.registry.transitions`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from esteira.results import NothingToDo, Reference, StageResult
from esteira.usecase import UseCase

log = logging.getLogger("esteira.registry")


@dataclasses.dataclass(frozen=True)
class Approval:
    """The answer to the approval request: ``approved`` or ``rejected`` by ``approver``, or
    ``timed_out`` (nobody answered within the timeout)."""

    approver: str
    reason: str
    decision: str = "approved"

    @classmethod
    def recorded(cls, decision: Mapping[str, Any]) -> Approval | None:
        """The approval a ``record_decision`` reference carries; None when none was asked for."""
        if decision.get("decision") != "approved":
            return None
        return cls(decision["approver"], decision["reason"])


def challenger_to_promote(uc: UseCase, version: int | None, event_version: int | None) -> Reference:
    """The version to promote (the person's choice, else the triggering challenger event,
    else the current challenger) and the champion its gate compared against (its tags)."""
    from esteira.registry import transitions
    from esteira.registry.lineage import read_version

    version = version or event_version or transitions.get_alias_version(uc, "challenger")
    if version is None:
        raise transitions.RegistryError(
            f"model '{uc.model_name}' has no challenger: train one first, or set the version Param"
        )
    record = read_version(uc, version)
    if not record.gate_passed:
        raise transitions.RegistryError(
            f"model '{uc.model_name}' version {version} did not pass its gate "
            f"(verdict {record.gate_verdict!r}): it cannot be promoted"
        )
    expected = record.compared_champion
    log.info("promoting version %s of %s; its gate compared against champion %s",
             version, uc.model_name, expected)
    return {"model_name": uc.model_name, "version": int(version), "expected_champion": expected,
            "run_id": record.run_id or ""}


def record_decision(
    uc: UseCase, candidate: Mapping[str, Any], approval: Approval | None, timeout_hours: float
) -> StageResult:
    """Record the answer in the version's tags and the registry's history; the approval to
    promote with, or NothingToDo on a rejection or a timeout (nothing is promoted).

    ``approval`` None: none was asked for (``require_approval`` off).
    """
    from esteira.registry import transitions

    version = int(candidate["version"])
    if approval is None:
        return {"decision": "not_required", "version": version}
    if approval.decision == "timed_out":
        reason = f"no answer within {timeout_hours:g} h: version {version} was not promoted"
        transitions.record_decision(uc, "approval_timeout", version, "esteira (approval timeout)", reason)
        log.warning("%s", reason)
        return NothingToDo(reason)
    transitions.record_approval(uc, version, approval.approver, approval.reason, approval.decision)
    log.info("version %s of %s %s by %s: %s", version, uc.model_name, approval.decision,
             approval.approver, approval.reason)
    if approval.decision == "rejected":
        return NothingToDo(f"version {version} rejected by {approval.approver}: {approval.reason}")
    return {"decision": approval.decision, "version": version,
            "approver": approval.approver, "reason": approval.reason}


def promote(uc: UseCase, candidate: Mapping[str, Any], approval: Approval | None, run_id: str) -> Reference:
    """Compare-and-set the champion, as the approver (recorded by ``record_decision``) or, when
    no approval was asked for, as Esteira."""
    from esteira.registry import transitions

    version = int(candidate["version"])
    if approval is not None:
        actor, reason = approval.approver, approval.reason
    else:
        actor = f"esteira (no approval required; run {run_id})"
        reason = "gate passed; require_approval is off"
    previous = transitions.promote(uc, version, candidate["expected_champion"], actor, reason)
    log.info("champion of %s: version %s (was %s), by %s", uc.model_name, version, previous, actor)
    return {"model_name": uc.model_name, "version": version, "previous_champion": previous,
            "run_id": candidate.get("run_id", ""), "actor": actor}


def deploy(uc: UseCase, promoted: Mapping[str, Any], roll_back_on_failure: bool = True) -> StageResult:
    """Push ``promoted['version']`` to the use case's Model Serving endpoint when it declares
    ``databricks_serving:``, then reload the use case on the online server and check it
    serves the version.

    On a failed check the champion goes back to the previous version (through the registry
    module) if it still points at this one, the failure is recorded in the registry's
    history, and the task fails saying what was undone. NothingToDo when neither an endpoint
    nor a server serves the use case (or ESTEIRA_MODEL_SERVER_URL=off). The endpoint goes
    first: a server failure after it rolls the alias back but leaves the endpoint on the
    version until the rollback's own deploy.
    """
    from esteira.config import get_settings
    from esteira.registry import transitions
    from esteira.serving.deploy import DeployError, deploy_champion

    settings = get_settings()
    version = int(promoted["version"])
    previous = promoted.get("previous_champion")

    def roll_back(where: str = settings.model_server_url) -> str:
        if not roll_back_on_failure:
            return f"the champion alias stays on version {version} (a rollback's deploy moves no alias)"
        current = transitions.get_alias_version(uc, "champion")
        if current != version:
            return f"the champion alias is on version {current}, not {version}: left where it is"
        if not previous:
            return f"the champion alias stays on version {version}: there is no earlier champion"
        transitions.rollback(uc, int(previous), "esteira deploy check", f"version {version} failed its canary on {where}")
        log.error("champion rolled back to version %s", previous)
        return f"the champion alias rolled back from version {version} to version {previous}"

    endpoint = _deploy_to_endpoint(uc, settings, version, roll_back) if uc.databricks_serving else None
    served = {"databricks_serving": endpoint} if endpoint else {}
    if settings.model_server_url == "off":
        if endpoint:
            return {"deployed": True, **served}
        return NothingToDo("ESTEIRA_MODEL_SERVER_URL=off: no online server to deploy to")
    try:
        result = deploy_champion(uc, settings, version, on_failure=roll_back)
    except DeployError as failed:
        transitions.record_decision(uc, "deploy_failed", version, "esteira deploy check", str(failed))
        raise
    if isinstance(result, NothingToDo):
        log.warning("%s", result.reason)
        return {"deployed": True, **served} if endpoint else result
    return {"deployed": True, **result, **served}


def _deploy_to_endpoint(uc: UseCase, settings, version: int, roll_back) -> dict:
    """The ``databricks_serving`` target; on failure the alias rolls back and the history
    records it, as for the online server."""
    from esteira.databricks import serving, workspace
    from esteira.registry import transitions
    from esteira.serving.deploy import DeployError, serving_example

    where = f"serving endpoint {uc.databricks_serving.endpoint}"
    try:
        canary = serving_example(settings, uc.model_name, str(version))
        return serving.deploy_version(uc, workspace.client(), version, canary)
    except (serving.ServingDeployError, DeployError) as failed:
        message = f"{failed}; {roll_back(where)}"
        transitions.record_decision(uc, "deploy_failed", version, "esteira deploy check", message)
        raise serving.ServingDeployError(message) from None
