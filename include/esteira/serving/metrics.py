"""Prometheus metrics of the model server, on a registry of its own (one per app)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "esteira_requests", "HTTP requests by path and status", ["path", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "esteira_request_errors", "HTTP answers with status >= 400, by path and status",
            ["path", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "esteira_request_latency_seconds", "Time from request to response, by path",
            ["path"], buckets=_BUCKETS, registry=self.registry,
        )
        self.rows = Counter(
            "esteira_predicted_rows", "Rows scored by /invocations", registry=self.registry
        )
        self.model_calls = Counter(
            "esteira_model_calls", "Model calls (rows / calls: how well requests coalesce)",
            registry=self.registry,
        )
        self.model_version = Gauge(
            "esteira_model_version", "Live model version (0: no model loaded)",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "esteira_model_info", "The live model (value 1); scoring: onnx or sklearn",
            ["model_name", "model_version", "run_id", "scoring"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "esteira_model_reloads", "Attempts to follow the alias, by result", ["result"],
            registry=self.registry,
        )
        self.pending_bytes = Gauge(
            "esteira_pending_bytes", "Bytes of request bodies held (read, parsed, queued or scored)",
            registry=self.registry,
        )
        self.rejected = Counter(
            "esteira_rejected_requests", "Requests refused with 503 because too many bytes were held",
            registry=self.registry,
        )
        self.online_rows = Counter(
            "esteira_online_rows", "Rows filled from the online store by use case and outcome "
            "(fresh, stale, missing: no stored features), refused ones included",
            ["usecase", "outcome"], registry=self.registry,
        )
        self.log_dropped = Counter(
            "esteira_inference_log_dropped", "Requests not logged because the queue held too many bytes",
            registry=self.registry,
        )

    def observe(self, path: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(path, code).inc()
        if status >= 400:
            self.errors.labels(path, code).inc()
        self.latency.labels(path).observe(seconds)

    def set_model(self, name: str, version: str, run_id: str, scoring: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, run_id, scoring).set(1)
        self.model_version.set(float(version) if version.isdigit() else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware: it costs a task per request on the hot path)."""

    def __init__(self, app, metrics: ServerMetrics, paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.observe(path, status, time.perf_counter() - start)
