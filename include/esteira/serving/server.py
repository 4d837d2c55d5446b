"""The online model server: MLflow's scoring protocol, following each use case's ``champion``.

Drop-in for ``mlflow models serve``: the same request formats, answers and error codes
(``protocol`` says how, README lists where it deliberately differs), ``/version`` as
MLflow answers it, and probabilities on request through ``params``. Beyond it: one process
serves several use cases, each at ``POST /models/<uc>/invocations`` with its live model's
details at ``/models/<uc>/version`` (a server of one use case also answers the plain
``POST /invocations``); each follows its alias on its own (``POST /models/<uc>/reload``,
``POST /reload`` for all, and polling), the compiled (ONNX) path when the version has an
equivalent one, rows sent by entity key filled from the online store (``lookup``), one inference log per use case, Prometheus ``/metrics``, an optional API key.

It never stalls: bodies above ``inline_bytes`` are parsed on a worker thread, model calls
run on another (only a compiled call on a few rows runs on the loop, being cheaper than
the hop), so ``/ping``, ``/health`` and ``/metrics`` answer while a large request is
scored. It never holds more than ``max_pending_bytes`` of request bodies: past that a
request gets 503 with ``Retry-After`` at once, instead of waiting or growing memory.

    python -m esteira.serving.server --usecase churn --port 5001
    python -m esteira.serving.server --usecase 'churn,demand'     # or '*': every use case
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hmac
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from esteira.config import Settings, get_settings
from esteira.features.online import open_store
from esteira.serving import protocol
from esteira.serving.inference_log import InferenceLog, log_dir
from esteira.serving.invocations import PATH as INVOCATIONS
from esteira.serving.invocations import Admission, InvocationsMiddleware, Limits
from esteira.serving.lookup import Lookup
from esteira.serving.metrics import CONTENT_TYPE, MetricsMiddleware, ServerMetrics
from esteira.serving.model_loader import LoadedModel, load_version, resolve_alias, served_usecases
from esteira.serving.openapi import invocations_schema
from esteira.serving.scoring import Batcher
from esteira.usecase import UseCase

_log = logging.getLogger(__name__)
_JSON = "application/json"


@dataclass(frozen=True)
class ServerConfig:
    """Knobs of one server; ``api_key`` empty means no key is required."""

    alias: str = "champion"
    api_key: str = ""
    max_body_bytes: int = 5_000_000
    max_rows: int = 100_000  # rows of one request; more is a 413
    max_pending_bytes: int = 32_000_000  # bodies being read, parsed, queued or scored; past it, 503
    retry_after_seconds: int = 1
    inline_bytes: int = 32_768  # smaller bodies are parsed on the event loop (< 0.5 ms)
    inline_rows: int = 128  # compiled batches up to this many rows are scored on the loop
    poll_seconds: float = 30.0
    max_batch_rows: int = 10_000
    compiled: bool = True  # score with the version's ONNX graph when it is equivalent
    onnx_threads: int = 1
    log_flush_seconds: float = 1.0
    inference_log: bool = True


class NoModelError(RuntimeError):
    """The alias points to no version (yet)."""


@dataclass
class ModelSlot:
    """One use case's live model. Readers take ``slot.model`` once per request; a swap is one
    assignment."""

    settings: Settings
    name: str
    alias: str
    metrics: ServerMetrics
    compiled_threads: int | None = 1
    sole: bool = True  # the server's only model: it alone sets the unlabelled version gauge
    model: LoadedModel | None = None
    problem: str = "the model is still loading"
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _shown: tuple[str, ...] = ()

    def refresh(self) -> dict[str, Any]:
        """Follow the alias: load and warm a new version beside the live one, then swap."""
        with self._lock:
            previous = self.model.version if self.model else None
            try:
                version = resolve_alias(self.settings, self.name, self.alias)
                if version is None:
                    raise NoModelError(
                        f"no version of registered model '{self.name}' has the alias "
                        f"'{self.alias}' yet"
                    )
                if version != previous:
                    loaded = load_version(self.settings, self.name, version, self.compiled_threads)
                    self.model = loaded
                    # What is loaded now lives as long as the model: keep the cyclic GC from
                    # walking it on every collection (a full one took tens of ms mid-request).
                    gc.freeze()
                    self._show(loaded)
                    _log.info("serving %s (was %s) with %s", loaded.uri, previous,
                              "its compiled model" if loaded.compiled is not None
                              else f"sklearn: {loaded.compiled_reason}")
            except Exception as exc:
                self.problem = str(exc)
                self.metrics.reloads.labels("failed").inc()
                raise
            self.problem = ""
            self.metrics.reloads.labels("changed" if version != previous else "unchanged").inc()
            return {"changed": version != previous, "previous_version": previous,
                    "model_version": version}

    def _show(self, loaded: LoadedModel) -> None:
        scoring = "onnx" if loaded.compiled is not None else "sklearn"
        if self.sole:
            self.metrics.set_model(loaded.name, loaded.version, loaded.run_id, scoring)
            return
        if self._shown:  # replace only this use case's line; the others' models stay shown
            self.metrics.model_info.remove(*self._shown)
        self._shown = (loaded.name, loaded.version, loaded.run_id, scoring)
        self.metrics.model_info.labels(*self._shown).set(1)

    def poll(self, interval: float, stop: threading.Event) -> None:
        """Load now, then follow the alias every ``interval`` seconds (never, if <= 0)."""
        while True:
            try:
                self.refresh()
            except Exception as exc:  # keep serving the live model; /health shows the problem
                _log.warning("following %s@%s: %s", self.name, self.alias, exc)
            if interval <= 0 or stop.wait(interval):
                return


@dataclass
class Served:
    """One use case on the server: its live model, its batcher and its own inference log."""

    uc: UseCase
    slot: ModelSlot
    batcher: Batcher
    log: InferenceLog | None
    lookup: Lookup | None = None


def create_app(
    usecases: UseCase | Iterable[UseCase], settings: Settings, config: ServerConfig | None = None
) -> FastAPI:
    """The server app for one or several use cases; model loading and polling start with its
    lifespan. Admission and the parse and score threads are shared: one budget per process."""
    ucs = [usecases] if isinstance(usecases, UseCase) else list(usecases)
    if not ucs:
        raise ValueError("a model server needs at least one use case")
    config = config or ServerConfig(api_key=settings.model_server_api_key)
    metrics = ServerMetrics()
    metrics.model_version.set(0)
    parsing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="esteira-parse")
    scoring = ThreadPoolExecutor(max_workers=1, thread_name_prefix="esteira-score")
    admission = Admission(config.max_pending_bytes, on_change=metrics.pending_bytes.set)
    sole = ucs[0] if len(ucs) == 1 else None
    served = {
        uc.name: Served(
            uc,
            ModelSlot(settings, uc.model_name, config.alias, metrics,
                      config.onnx_threads if config.compiled else None, sole=sole is not None),
            Batcher(config.max_batch_rows, scoring, config.inline_rows,
                    on_call=metrics.model_calls.inc),
            InferenceLog(log_dir(settings, uc), flush_seconds=config.log_flush_seconds,
                         on_drop=metrics.log_dropped.inc) if config.inference_log else None,
            Lookup(uc, open_store(settings, uc), _counter(metrics, uc.name))
            if uc.online is not None else None,
        )
        for uc in ucs
    }
    key = config.api_key.encode()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        pollers = [
            threading.Thread(target=s.slot.poll, args=(config.poll_seconds, stop),
                             name=f"esteira-poll-{name}", daemon=True)
            for name, s in served.items()
        ]
        for s in served.values():
            if s.log is not None:
                s.log.start()
        for poller in pollers:
            poller.start()
        try:
            yield
        finally:
            stop.set()
            for poller in pollers:
                poller.join(timeout=5)
            parsing.shutdown(wait=True)
            scoring.shutdown(wait=True)
            for s in served.values():
                if s.log is not None:
                    s.log.close()

    names = ", ".join(served)
    app = FastAPI(
        title=f"Esteira model server: {names}",
        description=__doc__.split("\n\n")[0],
        version="1",
        lifespan=lifespan,
    )
    app.state.served = served
    app.state.admission = admission

    def key_problem(header: Callable[[str], str | None]) -> tuple[int, str, str] | None:
        if not key:
            return None
        given = header("x-api-key")
        if given is None:
            auth = header("authorization") or ""
            given = auth[7:] if auth.lower().startswith("bearer ") else None
        if given is None:
            return 401, "missing API key: send it in the X-API-Key header", "UNAUTHENTICATED"
        if not hmac.compare_digest(given.encode(), key):
            return 403, "wrong API key", "PERMISSION_DENIED"
        return None

    limits = Limits(config.max_body_bytes, config.max_rows, config.inline_bytes,
                    config.retry_after_seconds)
    app.add_middleware(UseCaseRouter, handlers={
        name: dict(slot=s.slot, batcher=s.batcher, admission=admission, limits=limits,
                   parsing=parsing, metrics=metrics, log=s.log, check_key=key_problem,
                   lookup=s.lookup)
        for name, s in served.items()
    }, sole=sole.name if sole is not None else None)
    per_usecase = {f"/models/{name}/{leaf}" for name in served
                   for leaf in ("invocations", "version", "reload")}
    app.add_middleware(MetricsMiddleware, metrics=metrics, paths=frozenset(
        {INVOCATIONS, "/ping", "/health", "/version", "/reload", "/metrics", "/models",
         *per_usecase}))
    app.openapi = lambda: _openapi(app, ucs, sole is not None)

    def describe(s: Served) -> dict[str, Any]:
        model = s.slot.model
        if model is None:
            return {"model_name": s.uc.model_name, "model_version": None,
                    "alias": config.alias, "reason": s.slot.problem}
        return {**model.describe(), "alias": config.alias,
                "scoring": "onnx" if model.compiled is not None else "sklearn"}

    async def reload_one(s: Served) -> tuple[int, dict[str, Any]]:
        try:
            return 200, await asyncio.to_thread(s.slot.refresh)
        except Exception as exc:
            live = s.slot.model.version if s.slot.model else None
            return 503, {"error_code": "RELOAD_FAILED", "message": str(exc), "model_version": live}

    @app.get("/ping", summary="Liveness: the process answers")
    async def ping() -> Response:
        return Response(b'{"status": "alive"}', media_type=_JSON)

    @app.get("/health", summary="Readiness: 200 once a model is loaded, else 503",
             responses={503: {"description": "no model loaded yet"}})
    async def health() -> Response:
        if sole is not None:
            slot = served[sole.name].slot
            model = slot.model
            if model is None:
                return _json(503, {"status": "not ready", "reason": slot.problem})
            return _json(200, {"status": "ready", **model.describe(),
                               **({"warning": slot.problem} if slot.problem else {})})
        models = {name: describe(s) for name, s in served.items()}
        ready = any(m["model_version"] is not None for m in models.values())
        return _json(200 if ready else 503,
                     {"status": "ready" if ready else "not ready", "models": models})

    @app.get("/version", summary="The MLflow version, as mlflow models serve answers")
    async def mlflow_version() -> Response:
        return Response(_MLFLOW_VERSION.encode(), media_type=_JSON)

    @app.get("/models", summary="The use cases this server serves, and their live versions")
    async def models() -> Response:
        return _json(200, {"models": {name: describe(s) for name, s in served.items()}})

    @app.get("/models/{usecase}/version",
             summary="Which model version is live for a use case, and how it is scored",
             responses={404: {"description": "this server does not serve the use case"}})
    async def model_details(usecase: str) -> Response:
        s = served.get(usecase)
        if s is None:
            return _not_served(usecase, served)
        return _json(200, describe(s))

    @app.post("/models/{usecase}/reload", summary="Follow one use case's alias now (hot swap)",
              responses=_ERROR_RESPONSES)
    async def reload_usecase(usecase: str, request: Request) -> Response:
        refusal = key_problem(request.headers.get)
        if refusal is not None:
            return _error(*refusal)
        s = served.get(usecase)
        if s is None:
            return _not_served(usecase, served)
        return _json(*await reload_one(s))

    @app.post("/reload", summary="Follow the alias now (hot swap); every use case's on a "
                                 "server of several", responses=_ERROR_RESPONSES)
    async def reload(request: Request) -> Response:
        refusal = key_problem(request.headers.get)
        if refusal is not None:
            return _error(*refusal)
        if sole is not None:
            return _json(*await reload_one(served[sole.name]))
        answers = {name: await reload_one(s) for name, s in served.items()}
        status = 200 if all(code == 200 for code, _ in answers.values()) else 503
        return _json(status, {"models": {name: body for name, (_, body) in answers.items()}})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


class UseCaseRouter:
    """Sends ``POST /models/<uc>/invocations`` to that use case's scoring handler (and, on a
    server of one use case, ``POST /invocations`` too); everything else goes to the app.

    The handlers are InvocationsMiddleware, which answers the path ``/invocations``: the
    router hands them the request under that path.
    """

    def __init__(self, app, *, handlers: dict[str, dict[str, Any]], sole: str | None) -> None:
        self.app = app
        self.routes = {f"/models/{name}{INVOCATIONS}": InvocationsMiddleware(app, **kwargs)
                       for name, kwargs in handlers.items()}
        self.names = ", ".join(handlers)
        if sole is not None:
            self.routes[INVOCATIONS] = self.routes[f"/models/{sole}{INVOCATIONS}"]

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        handler = self.routes.get(path)
        if handler is not None:
            await handler({**scope, "path": INVOCATIONS}, receive, send)
        elif path == INVOCATIONS:
            body = protocol.error_body(
                f"this server serves several use cases ({self.names}): "
                f"POST /models/<uc>{INVOCATIONS}", "ENDPOINT_NOT_FOUND")
            await Response(body, 404, media_type=_JSON)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _counter(metrics: ServerMetrics, usecase: str) -> Callable[[str, int], None]:
    return lambda outcome, rows: metrics.online_rows.labels(usecase, outcome).inc(rows)


def _not_served(usecase: str, served: dict[str, Served]) -> Response:
    return _error(404, f"this server does not serve use case '{usecase}' "
                       f"(it serves: {', '.join(served)})", "RESOURCE_DOES_NOT_EXIST")


_MLFLOW_VERSION = package_version("mlflow")


def _openapi(app: FastAPI, ucs: list[UseCase], sole: bool) -> dict[str, Any]:
    """FastAPI's document plus each ``POST /models/<uc>/invocations`` (and ``POST
    /invocations`` on a server of one use case), which UseCaseRouter serves."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        for uc in ucs:
            operation = {"summary": f"Score rows of {uc.name} (MLflow scoring protocol)",
                         "responses": {str(k): v for k, v in _ERROR_RESPONSES.items()}}
            extra = invocations_schema(uc)
            operation["requestBody"] = extra["requestBody"]
            operation["responses"].update(extra["responses"])
            schema["paths"][f"/models/{uc.name}{INVOCATIONS}"] = {"post": operation}
            if sole:
                schema["paths"][INVOCATIONS] = {"post": operation}
        app.openapi_schema = schema
    return app.openapi_schema


def _error(status: int, message: str, code: str) -> Response:
    return Response(protocol.error_body(message, code), status, media_type=_JSON)


def _json(status: int, payload: dict) -> Response:
    return Response(json.dumps(payload).encode(), status, media_type=_JSON)


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body does not fit the model signature (message names the problem)"},
    401: {"description": "API key required"},
    403: {"description": "wrong API key"},
    413: {"description": "body larger than --max-body-bytes, or more rows than --max-rows"},
    415: {"description": "unsupported Content-Type"},
    500: {"description": "scoring failed for a reason that is not the request's"},
    503: {"description": "no model loaded yet, the reload failed, or too many bytes pending "
                         "(Retry-After says when to try again)"},
}


def main(argv: list[str] | None = None) -> int:
    """Serve the use cases' ``champion`` with uvicorn (one worker; hot swap needs one process)."""
    import uvicorn

    settings = get_settings()
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(prog="python -m esteira.serving.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--usecase", default=os.environ.get("ESTEIRA_SERVE_USECASE", ""),
                        help="a use case, a comma-separated list, or '*' for all "
                             "(default: ESTEIRA_SERVE_USECASE)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.model_server_port)
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--poll-interval", type=float, default=defaults.poll_seconds,
                        help="seconds between checks of the alias (0: only at start and on /reload)")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--max-rows", type=int, default=defaults.max_rows,
                        help="most rows in one request (more: 413)")
    parser.add_argument("--max-pending-bytes", type=int, default=defaults.max_pending_bytes,
                        help="request bytes held at once (more: 503 with Retry-After)")
    parser.add_argument("--max-batch-rows", type=int, default=defaults.max_batch_rows,
                        help="most rows of concurrent requests scored in one model call")
    parser.add_argument("--no-compiled", action="store_true",
                        help="score with the sklearn pipeline even when an equivalent ONNX graph exists")
    parser.add_argument("--onnx-threads", type=int, default=defaults.onnx_threads,
                        help="onnxruntime intra-op threads")
    parser.add_argument("--no-inference-log", action="store_true")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    usecases = served_usecases(args.usecase, settings)
    if not usecases:
        parser.error(f"no use case to serve: --usecase {args.usecase!r} names none "
                     f"(use cases are in {settings.usecases_dir})")

    # Fail a registry call in seconds, not after MLflow's default 4 minutes of retries:
    # the poller tries again anyway.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A worker thread parsing or scoring hands the GIL back to the loop every millisecond
    # rather than every five, so small requests and /ping are not held behind a large one.
    sys.setswitchinterval(0.001)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        alias=args.alias,
        api_key=settings.model_server_api_key,
        max_body_bytes=args.max_body_bytes,
        max_rows=args.max_rows,
        max_pending_bytes=args.max_pending_bytes,
        poll_seconds=args.poll_interval,
        max_batch_rows=args.max_batch_rows,
        compiled=not args.no_compiled,
        onnx_threads=args.onnx_threads,
        inference_log=not args.no_inference_log,
    )
    app = create_app(usecases, settings, config)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, loop="uvloop", http="httptools",
                access_log=False, log_level=args.log_level, timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
