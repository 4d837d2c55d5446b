"""The rollback DAG's steps: point ``champion`` back at an earlier version, then deploy it
(a failed canary after a rollback fails loudly and rolls nothing further back)."""

from __future__ import annotations

import logging

from esteira.results import Reference
from esteira.stages.model_promotion import deploy
from esteira.usecase import UseCase

log = logging.getLogger("esteira.registry")

__all__ = ["deploy", "roll_back"]


def roll_back(uc: UseCase, version: int, actor: str, reason: str) -> Reference:
    from esteira.registry import transitions

    replaced = transitions.rollback(uc, version, actor, reason)
    log.info("rolled %s back to version %s (replacing %s), by %s: %s",
             uc.model_name, version, replaced, actor, reason)
    return {"model_name": uc.model_name, "version": version, "previous_champion": replaced, "actor": actor}
