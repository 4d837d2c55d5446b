"""Esteira's Airflow plugin: the "Esteira" page (champion, challenger, lineage, drift) with
its JSON API on the api-server, and task links to MLflow.

Every Airflow process imports plugins, task processes included, while only the api-server
serves the page: this module imports nothing heavy. The FastAPI app is built when
``fastapi_apps`` is first read, which only the api-server (and plugin listings) do; the
api-server then enters its lifespan before it serves, and that imports what the page's
answer reads with (MLflow's client, the Delta reader, the templates), so no request pays for
it. The data gathering lives in ``esteira.ui`` (no Airflow there).

No ``from __future__ import annotations`` here: FastAPI must resolve the annotations of the
routes, whose types are imported inside ``create_app``.
"""

import datetime as dt
import importlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from esteira.orchestration import pools

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from fastapi import FastAPI

log = logging.getLogger(__name__)

URL_PREFIX = "/esteira"
# What the page's answer imports: the registry's tags come through MLflow's client, the
# monitoring windows from the Delta table. Neither sklearn nor Evidently: the Evidently
# report is read only when asked for (its own route).
PAGE_MODULES = ("esteira.ui.overview", "esteira.tracking", "mlflow", "esteira.registry.lineage",
                "esteira.monitoring.results")


@asynccontextmanager
async def _prepare(app: "FastAPI") -> AsyncIterator[None]:
    """At the api-server's start: import PAGE_MODULES and compile the templates (about 1.5 s,
    more on a busy machine, that the first page view would otherwise wait for)."""
    from esteira.ui import page

    for name in PAGE_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the page then reports the failure itself
            log.warning("Esteira page: could not import %s ahead of its first request", name, exc_info=True)
    page.prepare()
    yield


@cache
def create_app() -> "FastAPI":
    """The page, the API and the report proxy; every route needs an Airflow login.

    A plugin's routes are not authenticated by default: the app-wide dependency checks the
    Bearer token or the UI's ``_token`` cookie (401 without one, 403 for a bad one).
    """
    from airflow.api_fastapi.core_api.security import requires_authenticated
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.exceptions import HTTPException as FastAPIHTTPException
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from esteira.config import ConfigError, get_settings, get_usecase, load_usecases
    from esteira.ui import overview, page

    app = FastAPI(
        title="Esteira",
        description="Champion and challenger, lineage and drift of every Esteira use case.",
        dependencies=[Depends(requires_authenticated())],
        lifespan=_prepare,
    )

    def bases(request: Request) -> tuple[str, str]:
        """(Airflow's base path, this app's base path), behind any reverse-proxy prefix."""
        here = request.scope.get("root_path", "")
        return here.removesuffix(URL_PREFIX), here

    def gather(request: Request, name: str | None = None) -> dict[str, Any]:
        settings = get_settings()
        airflow_base, here = bases(request)
        problems: list[str] = []
        try:
            usecases = [get_usecase(name, settings)] if name else load_usecases(settings)
        except ConfigError as exc:
            if name:
                raise HTTPException(404, str(exc)) from None
            problems.append(str(exc))
            usecases = []
        down = overview.mlflow_problem(settings.tracking_uri) if usecases else None
        views = [
            overview.usecase_overview(
                uc, settings, airflow_base, f"{here}/usecases/{uc.name}/reports", down
            )
            for uc in usecases
        ]
        return {
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mlflow_ui": settings.mlflow_ui_url,
            "problems": problems,
            "usecases": views,
        }

    @app.get("/", response_class=HTMLResponse, summary="The Esteira page")
    def index(request: Request) -> HTMLResponse:
        found = gather(request)
        return HTMLResponse(
            page.render_page(found["usecases"], found["generated_at"], found["mlflow_ui"], found["problems"])
        )

    @app.get("/api/usecases", summary="Every use case's overview")
    def api_usecases(request: Request) -> dict[str, Any]:
        return gather(request)

    @app.get("/api/usecases/{name}", summary="One use case's overview")
    def api_usecase(name: str, request: Request) -> dict[str, Any]:
        return gather(request, name)["usecases"][0]

    @app.get("/usecases/{name}/reports/{run_id}", response_class=HTMLResponse,
             summary="The Evidently drift report of a monitoring run")
    def report(name: str, run_id: str) -> HTMLResponse:
        settings = get_settings()
        try:
            uc = get_usecase(name, settings)
        except ConfigError as exc:
            raise HTTPException(404, str(exc)) from None
        down = overview.mlflow_problem(settings.tracking_uri)
        if down:
            raise HTTPException(503, down)
        try:
            return HTMLResponse(overview.report_html(uc, settings, run_id))
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: FastAPIHTTPException) -> HTMLResponse | JSONResponse:
        """The API answers JSON; the pages answer a readable page with the same status."""
        if request.url.path.startswith(f"{bases(request)[1]}/api"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                                headers=getattr(exc, "headers", None))
        airflow_base = bases(request)[0]
        if exc.status_code in (401, 403):
            body = page.render_message(
                "Please log in", f"The Esteira page needs an Airflow login ({exc.detail}).",
                f"{airflow_base}/auth/login?next={airflow_base}/plugin/esteira", "Log in to Airflow",
            )
        else:
            body = page.render_message(f"Error {exc.status_code}", str(exc.detail),
                                       f"{airflow_base}/plugin/esteira", "Back to Esteira")
        return HTMLResponse(body, status_code=exc.status_code)

    return app


class _PageApps:
    """``EsteiraPlugin.fastapi_apps``, built when first read (see the module doc), so that no
    other Airflow process imports FastAPI or builds the app."""

    def __get__(self, plugin: Any, owner: Any = None) -> list[dict[str, Any]]:
        return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Esteira"}]


def _return_value(ti_key: "TaskInstanceKey", task_id: str) -> Any:
    """A task's return value in the same DAG run, read from the metadata database (links
    are resolved in the api-server, outside any task)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    map_index = ti_key.map_index if task_id == ti_key.task_id else -1
    query = XComModel.get_many(
        key="return_value", run_id=ti_key.run_id, dag_ids=ti_key.dag_id,
        task_ids=task_id, map_indexes=map_index,
    ).with_only_columns(XComModel.value)
    with create_session() as session:
        value = session.execute(query).scalar()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _dag_tags(operator: Any) -> set[str]:
    return set(getattr(getattr(operator, "dag", None), "tags", None) or ())


class MlflowRunLink(BaseOperatorLink):
    """Training, gate and monitoring tasks of Esteira DAGs -> their MLflow run.

    Registered globally (a ``@task`` is a ``_PythonDecoratedOperator``, shared by every DAG),
    so it answers an empty link for any other task, which the UI does not show.
    """

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: "TaskInstanceKey") -> str:
        from esteira.config import get_settings
        from esteira.ui import links

        source = links.run_source(ti_key.task_id, _dag_tags(operator))
        if source is None:
            return ""
        task_id, key = source
        run_id = links.run_id_from(_return_value(ti_key, task_id), key)
        return links.mlflow_run_url(get_settings().mlflow_ui_url, run_id) if run_id else ""


class MlflowModelLink(BaseOperatorLink):
    """Registry tasks of Esteira DAGs (register, promote, roll back) -> the model version."""

    name = "MLflow model version"

    def get_link(self, operator: Any, *, ti_key: "TaskInstanceKey") -> str:
        from esteira.config import get_settings
        from esteira.ui import links

        if not links.has_model_version(ti_key.task_id, _dag_tags(operator)):
            return ""
        found = links.model_version_from(_return_value(ti_key, ti_key.task_id))
        if found is None:
            return ""
        return links.mlflow_model_url(get_settings().mlflow_ui_url, *found)


class EsteiraPlugin(AirflowPlugin):
    name = "esteira"
    fastapi_apps = _PageApps()
    external_views = [
        {
            "name": "Esteira",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "esteira",
        }
    ]
    global_operator_extra_links = [MlflowRunLink(), MlflowModelLink()]
    # The scheduler creates each model's one-slot registry pool as a run that needs it starts.
    listeners = [pools]
