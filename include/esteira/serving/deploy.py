"""Deploy the new champion to the model server that serves its use case, and prove it answers.

The promotion DAG's last task: ask the server to follow the use case's alias now (``POST
/models/<uc>/reload``), check ``/models/<uc>/version`` shows the expected version, and score
the model's own input example at ``/models/<uc>/invocations`` (the canary). A server that
does not serve the use case is no failure: there is nothing to deploy to
(``NothingToDo``). On a failed check the caller's ``on_failure`` runs (the DAG passes a
rollback of the alias through the registry module, which says what it did), a server that
took the failed version is reloaded again, and a DeployError says exactly what was done.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from esteira import tracking
from esteira.config import Settings
from esteira.results import NothingToDo
from esteira.usecase import UseCase


class DeployError(RuntimeError):
    """The server did not take up the expected version, or the canary failed."""


def deploy_champion(
    uc: UseCase,
    settings: Settings,
    expected_version: str | int,
    *,
    on_failure: Callable[[], str | None] | None = None,
    timeout: float = 120.0,
) -> dict[str, Any] | NothingToDo:
    """Reload ``uc`` on the server at ``settings.model_server_url`` and smoke-test
    ``expected_version``.

    Returns ``{model_version, server_url, path, previous_version, canary_rows}``, or
    NothingToDo when that server does not serve ``uc``. Raises DeployError after calling
    ``on_failure``, whose answer (what it undid) ends the message, as does its own failure.
    """
    import httpx

    expected = str(expected_version)
    base = settings.model_server_url.rstrip("/")
    root = f"/models/{uc.name}"
    headers = {"X-API-Key": settings.model_server_api_key} if settings.model_server_api_key else {}
    with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:
        undo = _Undo(client, base, root, on_failure)
        try:
            served = client.get(f"{root}/version")
            if served.status_code == 404:
                return NothingToDo(f"no model server at {base} serves use case '{uc.name}' "
                                   f"({_message(served)}): nothing to deploy to")
            undo.before = _body(served, "GET", f"{root}/version").get("model_version")
            canary = serving_example(settings, uc.model_name, expected)
            reloaded = _call(client, "POST", f"{root}/reload")
            undo.server_moved = bool(reloaded.get("changed"))
            live = _call(client, "GET", f"{root}/version").get("model_version")
            if live != expected:
                raise DeployError(f"{root}/version shows version {live}, expected {expected}")
            answer = _call(client, "POST", f"{root}/invocations", content=json.dumps(canary),
                           headers={"content-type": "application/json"})
        except (DeployError, httpx.HTTPError) as exc:
            undo(f"deploying {uc.model_name} version {expected} to {base}{root} failed: {exc}")
        rows = _rows(canary)
        if len(answer.get("predictions", [])) != rows:
            undo(f"canary on {base}{root}: expected {rows} predictions, got {answer!r:.300}")
    return {"model_version": expected, "server_url": base, "path": f"{root}/invocations",
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
    return _body(client.request(method, path, **kwargs), method, path)


def _body(response, method: str, path: str) -> dict:
    if response.status_code != 200:
        raise DeployError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
    return response.json()


def _message(response) -> str:
    try:
        return str(response.json().get("message", response.text))[:300]
    except ValueError:
        return response.text[:300]


def _rows(example: dict) -> int:
    (data,) = (v for k, v in example.items() if k != "params")
    if isinstance(data, dict):
        if "data" in data:
            return len(data["data"])
        return len(next(iter(data.values()), []))
    return len(data)


class _Undo:
    """Undo what a failed deploy moved, then raise a DeployError that says what was done:
    the caller's ``on_failure`` (the alias), and the server only if it took the new version."""

    def __init__(self, client, base: str, root: str,
                 on_failure: Callable[[], str | None] | None) -> None:
        self.client, self.base, self.root, self.on_failure = client, base, root, on_failure
        self.before: str | None = None
        self.server_moved = False

    def __call__(self, message: str) -> NoReturn:
        done = [message]
        if self.on_failure is not None:
            try:
                done.append(self.on_failure() or "on_failure ran")
            except Exception as exc:  # the rollback's own failure must not hide the first one
                raise DeployError(f"{message}; the rollback also failed: {exc}") from exc
        done.append(self._server())
        raise DeployError("; ".join(done))

    def _server(self) -> str:
        where = f"the server at {self.base}{self.root}"
        if not self.server_moved:
            serves = f" (serves version {self.before})" if self.before is not None else ""
            return f"{where} was not changed{serves}"
        try:
            self.client.post(f"{self.root}/reload")
            now = self.client.get(f"{self.root}/version").json().get("model_version")
        except Exception as exc:  # report it; the poller follows the alias anyway
            return f"{where} took the new version and could not be reloaded: {exc}"
        return f"{where} reloaded again and serves version {now}"
