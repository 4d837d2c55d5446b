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
    """Score the run's interval; ``{"skipped": reason}`` when there is nothing to score yet
    (no champion, no feature table), which the task turns into a skip."""
    from deltalake.exceptions import TableNotFoundError

    from esteira.orchestration.interval import IntervalError, interval_or_latest
    from esteira.serving.batch import NoChampionError, score_batch

    settings = get_settings()
    features = settings.table_uri(uc.name, uc.features.table)
    try:
        start, end = interval_or_latest(
            dict(params), dict(context), features, uc.timestamp, uc.monitoring.window_days
        )
        result = score_batch(
            uc, settings, dt.datetime.combine(start, dt.time()), dt.datetime.combine(end, dt.time()), run_id
        )
    except (NoChampionError, IntervalError) as nothing:
        return {"skipped": str(nothing)}
    except TableNotFoundError:
        return {"skipped": f"no feature table at {features} yet: run a feature refresh first"}
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
