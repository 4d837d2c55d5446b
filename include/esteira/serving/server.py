"""The online model server: MLflow's scoring protocol, following the ``champion`` alias.

Drop-in for ``mlflow models serve``: same request formats and response shape, and the
same answers (the method the model's pyfunc flavor names, ``predict`` by default: class
labels for a classifier, not probabilities). Beyond it: input checked against the
signature with a 4xx naming the problem, hot swap (``POST /reload`` and polling), an
inference log, Prometheus ``/metrics``, an optional API key.

Speed: the body is parsed straight into numpy columns (no pandas parsing), concurrent
requests are coalesced into one model call (sklearn's per-call overhead dwarfs a row's
cost), no thread hop on the request path, and nothing waits on disk.

    python -m esteira.serving.server --usecase churn --port 5001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from esteira.config import Settings, get_settings, get_usecase
from esteira.serving import protocol
from esteira.serving.inference_log import InferenceLog, Record, log_dir
from esteira.serving.metrics import CONTENT_TYPE, MetricsMiddleware, ServerMetrics
from esteira.serving.model_loader import LoadedModel, load_version, resolve_alias
from esteira.usecase import UseCase

_log = logging.getLogger(__name__)
_JSON = "application/json"
_PATHS = frozenset({"/invocations", "/ping", "/health", "/version", "/reload", "/metrics"})


@dataclass(frozen=True)
class ServerConfig:
    """Knobs of one server; ``api_key`` empty means no key is required."""

    alias: str = "champion"
    api_key: str = ""
    max_body_bytes: int = 5_000_000
    poll_seconds: float = 30.0
    max_batch_rows: int = 10_000
    log_flush_seconds: float = 1.0
    inference_log: bool = True


class NoModelError(RuntimeError):
    """The alias points to no version (yet)."""


@dataclass
class ModelSlot:
    """The live model. Readers take ``slot.model`` once per request; a swap is one assignment."""

    settings: Settings
    name: str
    alias: str
    metrics: ServerMetrics
    model: LoadedModel | None = None
    problem: str = "the model is still loading"
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
                    loaded = load_version(self.settings, self.name, version)
                    self.model = loaded
                    self.metrics.set_model(loaded.name, loaded.version, loaded.run_id)
                    _log.info("serving %s (was %s)", loaded.uri, previous)
            except Exception as exc:
                self.problem = str(exc)
                self.metrics.reloads.labels("failed").inc()
                raise
            self.problem = ""
            self.metrics.reloads.labels("changed" if version != previous else "unchanged").inc()
            return {"changed": version != previous, "previous_version": previous,
                    "model_version": version}

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
class _Pending:
    model: LoadedModel
    inputs: protocol.Inputs
    future: asyncio.Future


class Batcher:
    """Coalesces requests that arrive while the model runs into one model call.

    The model runs on the event loop itself, from a task: a lone request pays no thread
    hop (on a busy machine a hop costs more than the model), and requests that arrived
    during a call are parsed in the next loop iteration and scored together. Rows come
    back in request order; if a joint call fails, each request is retried alone so only
    the bad one gets the error.
    """

    def __init__(self, max_rows: int, on_call: Callable[[], None] | None = None) -> None:
        self.max_rows = max(max_rows, 1)
        self._on_call = on_call
        self._queue: list[_Pending] = []
        self._busy = False

    async def predict(self, model: LoadedModel, inputs: protocol.Inputs) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(model, inputs, future))
        if not self._busy:
            self._busy = True
            asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if self._on_call is not None:
                    self._on_call()
                for pending, result in zip(batch, _run_batch(batch), strict=True):
                    if pending.future.done():
                        continue
                    if isinstance(result, BaseException):
                        pending.future.set_exception(result)
                    else:
                        pending.future.set_result(result)
                await asyncio.sleep(0)  # let requests that arrived meanwhile join the next call
        finally:
            self._busy = False

    def _take(self) -> list[_Pending]:
        first = self._queue[0]
        batch, rows = [first], first.inputs.rows
        for pending in self._queue[1:]:
            if pending.model is not first.model or rows + pending.inputs.rows > self.max_rows:
                break
            batch.append(pending)
            rows += pending.inputs.rows
        del self._queue[: len(batch)]
        return batch


def _run_batch(batch: list[_Pending]) -> list[Any]:
    model = batch[0].model
    if len(batch) == 1:
        return [_predict_one(model, batch[0].inputs)]
    import numpy as np

    merged = protocol.Inputs(
        columns={
            name: np.concatenate([p.inputs.columns[name] for p in batch])
            for name in batch[0].inputs.columns
        },
        rows=sum(p.inputs.rows for p in batch),
    )
    try:
        joint = model.predict(merged.frame())
    except Exception:
        return [_predict_one(model, p.inputs) for p in batch]
    out, start = [], 0
    for p in batch:
        out.append(joint[start : start + p.inputs.rows])
        start += p.inputs.rows
    return out


def _predict_one(model: LoadedModel, inputs: protocol.Inputs) -> Any:
    try:
        return model.predict(inputs.frame())
    except Exception as exc:  # the model rejected these rows: a client error, as in MLflow
        return protocol.RequestError(f"the model could not score these rows: {exc}")


def create_app(uc: UseCase, settings: Settings, config: ServerConfig | None = None) -> FastAPI:
    """The server app for one use case; model loading and polling start with its lifespan."""
    config = config or ServerConfig(api_key=settings.model_server_api_key)
    metrics = ServerMetrics()
    metrics.model_version.set(0)
    slot = ModelSlot(settings, uc.model_name, config.alias, metrics)
    batcher = Batcher(config.max_batch_rows, on_call=metrics.model_calls.inc)
    log = (
        InferenceLog(log_dir(settings, uc), flush_seconds=config.log_flush_seconds,
                     on_drop=metrics.log_dropped.inc)
        if config.inference_log
        else None
    )
    key = config.api_key.encode()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        poller = threading.Thread(
            target=slot.poll, args=(config.poll_seconds, stop), name="esteira-poll", daemon=True
        )
        if log is not None:
            log.start()
        poller.start()
        try:
            yield
        finally:
            stop.set()
            poller.join(timeout=5)
            if log is not None:
                log.close()

    app = FastAPI(
        title=f"Esteira model server: {uc.name}",
        description=__doc__.split("\n\n")[0],
        version="1",
        lifespan=lifespan,
    )
    app.state.slot = slot
    app.state.inference_log = log
    app.add_middleware(MetricsMiddleware, metrics=metrics, paths=_PATHS)

    def denied(request: Request) -> Response | None:
        if not key:
            return None
        given = request.headers.get("x-api-key")
        if given is None:
            auth = request.headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else None
        if given is None:
            return _error(401, "missing API key: send it in the X-API-Key header", "UNAUTHENTICATED")
        if not hmac.compare_digest(given.encode(), key):
            return _error(403, "wrong API key", "PERMISSION_DENIED")
        return None

    @app.post(
        "/invocations",
        summary="Score rows (MLflow scoring protocol)",
        openapi_extra=_invocations_openapi(uc),
        responses=_ERROR_RESPONSES,
    )
    async def invocations(request: Request) -> Response:
        refusal = denied(request)
        if refusal is not None:
            return refusal
        model = slot.model
        if model is None:
            return _error(503, f"no model is loaded: {slot.problem}", "MODEL_NOT_READY")
        received = time.time()
        try:
            body = await _read_body(request, config.max_body_bytes)
            inputs = protocol.parse_request(body, request.headers.get("content-type"), model.columns)
            predictions = await batcher.predict(model, inputs)
        except protocol.RequestError as exc:
            return Response(protocol.error_body(exc), exc.status, media_type=_JSON)
        request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        metrics.rows.inc(inputs.rows)
        if log is not None:
            log.append(Record(request_id, received, model.name, model.version,
                              inputs.columns, predictions))
        return Response(
            protocol.encode_predictions(predictions),
            media_type=_JSON,
            headers={"x-request-id": request_id, "x-model-version": model.version},
        )

    @app.get("/ping", summary="Liveness: the process answers")
    async def ping() -> Response:
        return Response(b'{"status": "alive"}', media_type=_JSON)

    @app.get("/health", summary="Readiness: 200 once a model is loaded, else 503",
             responses={503: {"description": "no model loaded yet"}})
    async def health() -> Response:
        model = slot.model
        if model is None:
            return _json(503, {"status": "not ready", "reason": slot.problem})
        return _json(200, {"status": "ready", **model.describe(),
                           **({"warning": slot.problem} if slot.problem else {})})

    @app.get("/version", summary="Which model version is live")
    async def version() -> Response:
        model = slot.model
        if model is None:
            return _json(200, {"model_name": uc.model_name, "model_version": None,
                               "alias": config.alias, "reason": slot.problem})
        return _json(200, {**model.describe(), "alias": config.alias})

    @app.post("/reload", summary="Follow the alias now (hot swap)", responses=_ERROR_RESPONSES)
    async def reload(request: Request) -> Response:
        refusal = denied(request)
        if refusal is not None:
            return refusal
        try:
            result = await asyncio.to_thread(slot.refresh)
        except Exception as exc:
            live = slot.model.version if slot.model else None
            return _json(503, {"error_code": "RELOAD_FAILED", "message": str(exc),
                               "model_version": live})
        return _json(200, result)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> protocol.RequestError:
    return protocol.RequestError(
        f"request body of {size} bytes exceeds the limit of {limit} bytes (--max-body-bytes)",
        status=413,
        code="REQUEST_TOO_LARGE",
    )


def _error(status: int, message: str, code: str) -> Response:
    return Response(protocol.error_body(message, code), status, media_type=_JSON)


def _json(status: int, payload: dict) -> Response:
    return Response(json.dumps(payload).encode(), status, media_type=_JSON)


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body does not fit the model signature (message names the problem)"},
    401: {"description": "API key required"},
    403: {"description": "wrong API key"},
    413: {"description": "body larger than --max-body-bytes"},
    415: {"description": "unsupported Content-Type"},
    503: {"description": "no model loaded yet, or the reload failed"},
}

_JSON_SCHEMA_TYPES = {
    "float": {"type": ["number", "null"]},
    "int": {"type": "integer"},
    "bool": {"type": "boolean"},
    "string": {"type": ["string", "null"]},
    "category": {"type": ["string", "null"]},
    "timestamp": {"type": "string"},
}


def _invocations_openapi(uc: UseCase) -> dict[str, Any]:
    """The request body as an OpenAPI schema, from the use case's feature definitions."""
    names = uc.feature_names
    row = {
        "type": "object",
        "properties": {f.name: _JSON_SCHEMA_TYPES[f.type] for f in uc.features.definitions},
        "required": names,
        "additionalProperties": False,
    }
    rows = {"type": "array", "items": row, "minItems": 1}
    columns = {
        "type": "object",
        "properties": {
            f.name: {"type": "array", "items": _JSON_SCHEMA_TYPES[f.type]}
            for f in uc.features.definitions
        },
        "required": names,
        "additionalProperties": False,
    }
    split = {
        "type": "object",
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "array", "items": {"type": "array"}, "minItems": 1},
            "index": {"type": "array"},
        },
        "required": ["columns", "data"],
    }

    def one_of(key: str, schema: dict) -> dict:
        return {
            "type": "object",
            "properties": {key: schema, "params": {"type": "object"}},
            "required": [key],
            "additionalProperties": False,
        }

    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            one_of("dataframe_split", split),
                            one_of("dataframe_records", rows),
                            one_of("instances", rows),
                            one_of("inputs", {"oneOf": [rows, columns]}),
                        ]
                    }
                },
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        "responses": {
            "200": {
                "description": "one prediction per row, in request order",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"predictions": {"type": "array"}},
                        }
                    }
                },
            }
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Serve one use case's ``champion`` with uvicorn (one worker; hot swap needs one process)."""
    import uvicorn

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m esteira.serving.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--usecase", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.model_server_port)
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--poll-interval", type=float, default=30.0,
                        help="seconds between checks of the alias (0: only at start and on /reload)")
    parser.add_argument("--max-body-bytes", type=int, default=5_000_000)
    parser.add_argument("--max-batch-rows", type=int, default=10_000,
                        help="most rows of concurrent requests scored in one model call")
    parser.add_argument("--no-inference-log", action="store_true")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    # Fail a registry call in seconds, not after MLflow's default 4 minutes of retries:
    # the poller tries again anyway.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        alias=args.alias,
        api_key=settings.model_server_api_key,
        max_body_bytes=args.max_body_bytes,
        poll_seconds=args.poll_interval,
        max_batch_rows=args.max_batch_rows,
        inference_log=not args.no_inference_log,
    )
    app = create_app(get_usecase(args.usecase, settings), settings, config)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, loop="uvloop", http="httptools",
                access_log=False, log_level=args.log_level, timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
