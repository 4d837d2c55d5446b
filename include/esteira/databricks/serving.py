"""The ``databricks_serving`` deploy target: the champion's version on a Model Serving endpoint.

One served entity per version, taking all the traffic. The config update is asynchronous:
the endpoint builds the new version while it keeps serving the old one, and only a
finished update (``state.config_update`` back to NOT_UPDATING) is followed by the canary,
the model's own input example through the endpoint's ``invocations``. A failed update
leaves the endpoint on the previous version by itself; a failed canary puts the previous
served entity back (and waits for it). Either way a ServingDeployError says what was done,
and the caller rolls the champion alias back.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any

from esteira.config import ConfigError
from esteira.usecase import UseCase

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.serving import ServedEntityInput, ServingEndpointDetailed


class ServingDeployError(RuntimeError):
    """The endpoint did not take up the version, or its canary failed; says what was undone."""


def deploy_version(uc: UseCase, workspace: WorkspaceClient, version: int | str, canary: dict) -> dict[str, Any]:
    """Serve ``version`` of the use case's model on its endpoint and score ``canary`` there.

    Returns ``{endpoint, model_version, previous_version, changed, canary_rows}``; raises
    ServingDeployError.
    """
    from databricks.sdk.errors import DatabricksError, NotFound, OperationFailed
    from databricks.sdk.service.serving import EndpointCoreConfigInput

    spec = uc.databricks_serving
    if spec is None:
        raise ConfigError(f"use case '{uc.name}' has no databricks_serving: section (databricks_serving.endpoint)")
    name, expected = spec.endpoint, str(version)
    timeout = dt.timedelta(minutes=spec.timeout_minutes)
    try:
        current = workspace.serving_endpoints.get(name)
    except NotFound:
        current = None
    before = _served(current)
    previous = before.entity_version if before is not None else None
    rows = _rows(canary)
    if previous == expected:
        _score(workspace, name, canary, rows)
        return {"endpoint": name, "model_version": expected, "previous_version": previous, "changed": False,
                "canary_rows": rows}
    entity = _entity(uc, expected)
    traffic = _traffic(entity.name)
    try:
        if current is None:
            workspace.serving_endpoints.create(
                name=name, config=EndpointCoreConfigInput(name=name, served_entities=[entity], traffic_config=traffic)
            ).result(timeout=timeout)
        else:
            workspace.serving_endpoints.update_config(
                name, served_entities=[entity], traffic_config=traffic
            ).result(timeout=timeout)
    except (DatabricksError, OperationFailed, TimeoutError) as exc:
        # OperationFailed: UPDATE_FAILED; DatabricksError: refused, e.g. 409 while another update runs
        reason = _failure(workspace, name) if isinstance(exc, OperationFailed) else ""
        raise ServingDeployError(
            f"serving endpoint {name}: the update to {uc.model_name} version {expected} did not finish "
            f"({reason or exc}); it still serves version {previous or 'none'}"
        ) from None
    try:
        _score(workspace, name, canary, rows)
    except (DatabricksError, ServingDeployError) as exc:
        undone = "no earlier version to put back"
        if before is not None:
            from databricks.sdk.service.serving import ServedEntityInput

            restored = ServedEntityInput.from_dict(before.as_dict())
            workspace.serving_endpoints.update_config(
                name, served_entities=[restored], traffic_config=_traffic(restored.name)
            ).result(timeout=timeout)
            undone = f"the endpoint serves version {previous} again"
        raise ServingDeployError(
            f"serving endpoint {name}: the canary of {uc.model_name} version {expected} failed ({exc}); {undone}"
        ) from None
    return {"endpoint": name, "model_version": expected, "previous_version": previous, "changed": True,
            "canary_rows": rows}


def _entity(uc: UseCase, version: str) -> ServedEntityInput:
    from databricks.sdk.service.serving import ServedEntityInput

    spec = uc.databricks_serving
    return ServedEntityInput(
        name=f"{uc.name}-{version}", entity_name=uc.model_name, entity_version=version,
        workload_size=spec.workload_size, scale_to_zero_enabled=spec.scale_to_zero,
    )


def _traffic(served_name: str):
    from databricks.sdk.service.serving import Route, TrafficConfig

    return TrafficConfig(routes=[Route(served_model_name=served_name, traffic_percentage=100)])


def _served(endpoint: ServingEndpointDetailed | None):
    """The served entity that takes the traffic, or None (no endpoint, or no config yet)."""
    if endpoint is None or endpoint.config is None or not endpoint.config.served_entities:
        return None
    routes = endpoint.config.traffic_config.routes if endpoint.config.traffic_config else []
    live = {r.served_model_name for r in routes or [] if r.traffic_percentage}
    entities = endpoint.config.served_entities
    return next((e for e in entities if e.name in live), entities[0])


def _failure(workspace: WorkspaceClient, name: str) -> str:
    """What the endpoint says about the served entity that did not deploy."""
    pending = workspace.serving_endpoints.get(name).pending_config
    messages = [e.state.deployment_state_message for e in (pending.served_entities or []) if e.state] if pending else []
    return "; ".join(m for m in messages if m)


def _score(workspace: WorkspaceClient, name: str, canary: dict, rows: int) -> None:
    from databricks.sdk.service.serving import DataframeSplitInput

    canary = _json_safe(canary)
    if "dataframe_split" in canary:
        answer = workspace.serving_endpoints.query(name, dataframe_split=DataframeSplitInput.from_dict(canary["dataframe_split"]))
    else:
        answer = workspace.serving_endpoints.query(name, dataframe_records=canary["dataframe_records"])
    if len(answer.predictions or []) != rows:
        raise ServingDeployError(f"expected {rows} predictions, got {len(answer.predictions or [])}")


def _rows(canary: dict) -> int:
    if "dataframe_split" in canary:
        return len(canary["dataframe_split"]["data"])
    if "dataframe_records" in canary:
        return len(canary["dataframe_records"])
    raise ServingDeployError(f"the canary example has neither dataframe_split nor dataframe_records: {sorted(canary)}")


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null: MLflow's example keeps missing values as NaN, which is not
    JSON, so the request could not be sent; the endpoint reads null as missing."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
