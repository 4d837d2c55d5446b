"""The promotion and rollback DAGs' steps: who decided, then one call into `transitions`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient

from esteira.registry import transitions
from esteira.usecase import UseCase

log = logging.getLogger("esteira.registry")


def _optional_version(raw: str | None) -> int | None:
    return None if raw in (None, "", "none") else int(raw)


def challenger_to_promote(uc: UseCase, params: Mapping[str, Any], event: Mapping[str, Any]) -> dict:
    """The version to promote (the Param, else the triggering challenger event, else the
    current challenger) and the champion its gate compared against (from its tags)."""
    version = params.get("version") or event.get("version") or transitions.get_alias_version(uc, "challenger")
    if version is None:
        raise transitions.RegistryError(
            f"model '{uc.model_name}' has no challenger: train one first, or set the version Param"
        )
    tags = MlflowClient().get_model_version(uc.model_name, str(version)).tags
    if tags.get("gate_passed") != "true":
        raise transitions.RegistryError(
            f"model '{uc.model_name}' version {version} did not pass its gate "
            f"(verdict {tags.get('gate_verdict', 'unknown')!r}): it cannot be promoted"
        )
    expected = _optional_version(tags.get("gate_compared_champion"))
    log.info("promoting version %s of %s; its gate compared against champion %s",
             version, uc.model_name, expected)
    return {"model_name": uc.model_name, "version": int(version), "expected_champion": expected,
            "run_id": tags.get("run_id", "")}


def _approver(decision: Mapping[str, Any]) -> str:
    user = decision.get("responded_by_user") or {}
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "unknown")
    return str(user)


def promote_after_decision(
    uc: UseCase, candidate: Mapping[str, Any], decision: Mapping[str, Any] | None, dag_run: Any
) -> dict:
    """Record the human decision, if one was asked for, then compare-and-set the champion."""
    version = int(candidate["version"])
    if decision:
        approver = _approver(decision)
        reason = (decision.get("params_input") or {}).get("reason") or "(no reason given)"
        transitions.record_approval(uc, version, approver, reason, "approved")
        actor = approver
    else:
        actor = f"esteira (no approval required; run {dag_run.run_id})"
        reason = "gate passed; require_approval is off"
    previous = transitions.promote(uc, version, candidate["expected_champion"], actor, reason)
    log.info("champion of %s: version %s (was %s), by %s", uc.model_name, version, previous, actor)
    return {"model_name": uc.model_name, "version": version, "previous_champion": previous,
            "run_id": candidate.get("run_id", ""), "actor": actor}


def roll_back(uc: UseCase, params: Mapping[str, Any], dag_run: Any) -> dict:
    actor = getattr(dag_run, "triggering_user_name", None) or "unknown user"
    version = int(params["rollback_to_version"])
    replaced = transitions.rollback(uc, version, actor, params["reason"])
    log.info("rolled %s back to version %s (replacing %s), by %s: %s",
             uc.model_name, version, replaced, actor, params["reason"])
    return {"model_name": uc.model_name, "version": version, "previous_champion": replaced,
            "actor": actor}
