"""Airflow's shapes in, the stages' inputs out; the stages' results out as XComs, Asset
events and skips. The only module that reads a task context on the stages' behalf."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset

from esteira.results import NothingToDo, Reference, StageResult
from esteira.stages.window import RunWindow, requested_window


def skip_if_nothing(result: StageResult) -> Reference:
    """The reference, or a skipped task whose reason is the stage's."""
    if isinstance(result, NothingToDo):
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(result.reason)
    return result


def publish(context: Mapping[str, Any], asset: Asset, result: StageResult) -> Reference:
    """Emit ``asset`` with the reference as the event's extra (or skip, emitting nothing)."""
    reference = skip_if_nothing(result)
    context["outlet_events"][asset].extra = reference
    return reference


def window(context: Mapping[str, Any]) -> RunWindow | None:
    """The run's window from its Params or data interval; None for a run that has neither."""
    params = context["params"]
    return requested_window(
        params.get("interval_start"),
        params.get("interval_end"),
        context.get("data_interval_start"),
        context.get("data_interval_end"),
    )


def run_identity(context: Mapping[str, Any]) -> dict[str, Any]:
    """dag_id, run_id and try number: the lineage tags of what the run writes to MLflow."""
    return {"dag_id": context["dag"].dag_id, "run_id": context["run_id"], "try_number": context["ti"].try_number}


def triggering_user(context: Mapping[str, Any]) -> str:
    return getattr(context["dag_run"], "triggering_user_name", None) or "unknown user"


def triggering_extra(context: Mapping[str, Any], asset: Asset) -> dict:
    """The ``extra`` of the latest event of ``asset`` that triggered this run, or {}."""
    events = context.get("triggering_asset_events") or {}
    for key, items in events.items():
        if getattr(key, "uri", key) == asset.uri and items:
            return dict(items[-1].extra or {})
    return {}


def approver(decision: Mapping[str, Any]) -> str:
    """Who answered an approval, from the HITL task's XCom (``responded_by_user``)."""
    user = decision.get("responded_by_user") or {}
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "unknown")
    return str(user)


def approval_reason(decision: Mapping[str, Any]) -> str:
    return (decision.get("params_input") or {}).get("reason") or "(no reason given)"


def approval(decision: Mapping[str, Any] | None):
    """The answer from the HITL task's XCom, or None when none was asked for.

    The approval task's default option is Reject, which the scheduler applies when nobody
    answers within the timeout; it then records no user, so an answer without one is a
    timeout, not a person's rejection.
    """
    from esteira.stages.model_promotion import Approval

    if not decision:
        return None
    if not decision.get("responded_by_user"):
        return Approval("nobody", approval_reason(decision), "timed_out")
    chosen = (decision.get("chosen_options") or ["Approve"])[0]
    return Approval(approver(decision), approval_reason(decision), "approved" if chosen == "Approve" else "rejected")


def training_trigger(context: Mapping[str, Any], features: Asset, retraining: Asset):
    """What started a training run, from its triggering Asset events.

    A retraining request wins over a features event that arrived with it: the request is the
    reason for the run, and ``stages.model_training.choose_window`` reads the newest labels
    for it anyway. A request may name its ``training_end`` (an event sent by hand).
    """
    from esteira.stages.model_training import TrainingTrigger

    requested = triggering_extra(context, retraining)
    if requested:
        return TrainingTrigger("retraining", _day(requested.get("training_end")), str(requested.get("reason", "")))
    refreshed = triggering_extra(context, features)
    if refreshed:
        return TrainingTrigger("features", _day(refreshed.get("end")))
    return TrainingTrigger()


def _day(value: Any):
    """An event's ``YYYY-MM-DD`` (or ISO timestamp) as the naive midnight windows use."""
    import datetime as dt

    if not value:
        return None
    return dt.datetime.combine(dt.date.fromisoformat(str(value)[:10]), dt.time())
