"""Deploy the new champion to the running model server, and prove it answers.

The promotion DAG's last task: ask the server to follow the alias now (``POST /reload``),
check ``/version`` shows the expected version, and score the model's own input example
(the canary). On any failure the caller's ``on_failure`` runs (the DAG passes a rollback of
the alias through the registry module) and a DeployError says what went wrong.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from esteira import tracking
from esteira.config import Settings
from esteira.usecase import UseCase


class DeployError(RuntimeError):
    """The server did not take up the expected version, or the canary failed."""


def deploy_champion(
    uc: UseCase,
    settings: Settings,
    expected_version: str | int,
    *,
    on_failure: Callable[[], None] | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Reload the server on ``settings.model_server_url`` and smoke-test ``expected_version``.

    Returns ``{model_version, server_url, previous_version, canary_rows}``. Raises
    DeployError after calling ``on_failure`` (whose own failure is added to the message).
    """
    import httpx

    expected = str(expected_version)
    base = settings.model_server_url.rstrip("/")
    headers = {"X-API-Key": settings.model_server_api_key} if settings.model_server_api_key else {}
    try:
        canary = serving_example(settings, uc.model_name, expected)
        with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:
            reloaded = _call(client, "POST", "/reload")
            live = _call(client, "GET", "/version").get("model_version")
            if live != expected:
                raise DeployError(f"/version shows version {live}, expected {expected}")
            answer = _call(client, "POST", "/invocations", content=json.dumps(canary),
                           headers={"content-type": "application/json"})
    except (DeployError, httpx.HTTPError) as exc:
        _fail(f"deploying {uc.model_name} version {expected} to {base} failed: {exc}", on_failure)
    rows = _rows(canary)
    if len(answer.get("predictions", [])) != rows:
        _fail(f"canary on {base}: expected {rows} predictions, got {answer!r:.300}", on_failure)
    return {"model_version": expected, "server_url": base,
            "previous_version": reloaded.get("previous_version"), "canary_rows": rows}


def serving_example(settings: Settings, name: str, version: str) -> dict:
    """The request MLflow saved with the model (``serving_input_example.json``)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    root = tracking.client(settings).get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory(prefix="esteira-canary-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{root.rstrip('/')}/serving_input_example.json",
                dst_path=tmp, tracking_uri=settings.tracking_uri,
            )
            return json.loads(Path(path).read_text())
        except (MlflowException, OSError, ValueError) as exc:
            raise DeployError(
                f"models:/{name}/{version} has no usable input example for the canary "
                f"(log the model with input_example=...): {exc}"
            ) from exc


def _call(client, method: str, path: str, **kwargs) -> dict:
    response = client.request(method, path, **kwargs)
    if response.status_code != 200:
        raise DeployError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
    return response.json()


def _rows(example: dict) -> int:
    (data,) = (v for k, v in example.items() if k != "params")
    if isinstance(data, dict):
        if "data" in data:
            return len(data["data"])
        return len(next(iter(data.values()), []))
    return len(data)


def _fail(message: str, on_failure: Callable[[], None] | None) -> NoReturn:
    if on_failure is not None:
        try:
            on_failure()
        except Exception as exc:  # the rollback's own failure must not hide the first one
            raise DeployError(f"{message}; the rollback also failed: {exc}") from exc
        message += "; rolled back"
    raise DeployError(message)
