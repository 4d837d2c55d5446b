"""The batch-inference and deploy steps of the DAGs, as plain functions."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from esteira.config import get_settings
from esteira.usecase import UseCase

log = logging.getLogger("esteira.serving")


def score_interval(uc: UseCase, params: Mapping[str, Any], context: Mapping[str, Any], run_id: str) -> dict:
    from esteira.orchestration.interval import interval_or_latest
    from esteira.serving.batch import score_batch

    settings = get_settings()
    start, end = interval_or_latest(
        dict(params), dict(context), settings.table_uri(uc.name, uc.features.table),
        uc.timestamp, uc.monitoring.window_days,
    )
    result = score_batch(
        uc, settings, dt.datetime.combine(start, dt.time()), dt.datetime.combine(end, dt.time()), run_id
    )
    log.info("scored [%s, %s): %s", start, end, result)
    return {**result, "start": start.isoformat(), "end": end.isoformat()}


def deploy_or_roll_back(uc: UseCase, promoted: Mapping[str, Any], roll_back_on_failure: bool = True) -> dict:
    """Reload the online server and check it serves ``promoted['version']``.

    On a failed check the champion goes back to the previous version (through the registry
    module) and the task fails loudly. ESTEIRA_MODEL_SERVER_URL=off skips the deploy.
    """
    from esteira.registry import transitions
    from esteira.serving.deploy import deploy_champion

    settings = get_settings()
    if settings.model_server_url == "off":
        log.warning("ESTEIRA_MODEL_SERVER_URL=off: no online server to deploy to")
        return {"deployed": False, "version": promoted["version"]}
    previous = promoted.get("previous_champion")

    def roll_back() -> None:
        if roll_back_on_failure and previous:
            transitions.rollback(
                uc, int(previous), "esteira deploy check",
                f"version {promoted['version']} failed its canary on {settings.model_server_url}",
            )
            log.error("champion rolled back to version %s", previous)

    result = deploy_champion(uc, settings, int(promoted["version"]), on_failure=roll_back)
    return {"deployed": True, **result}
