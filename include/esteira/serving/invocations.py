"""``POST /invocations`` as a plain ASGI handler in front of the FastAPI app.

FastAPI's routing, request and response objects cost ~200 us a request on this class of
machine, more than parsing and scoring one row with the compiled model together, so the
scoring path talks ASGI directly; every other path is FastAPI's. The OpenAPI document
still describes ``/invocations`` (``server.py`` adds it).

Order of a request: API key, a loaded model, Content-Length against ``max_body_bytes``
(413), admission by bytes (503 with ``Retry-After``), the body, parsing (on a worker
thread above ``inline_bytes``) with the online store filling rows sent by entity key
(``lookup``), scoring (``scoring.Batcher``), the inference log (the inputs the model saw).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from esteira.serving import protocol
from esteira.serving.inference_log import InferenceLog, Record
from esteira.serving.metrics import ServerMetrics
from esteira.serving.scoring import Batcher

PATH = "/invocations"
_JSON = [(b"content-type", b"application/json")]


class Admission:
    """Bytes of request bodies the server holds; a request that would pass the limit is
    refused at once. A lone request is always admitted, so the limit never blocks one
    body that ``max_body_bytes`` allows."""

    def __init__(self, limit: int, on_change: Callable[[int], Any] | None = None) -> None:
        self.limit = limit
        self.held = 0
        self._on_change = on_change

    def take(self, size: int) -> bool:
        if self.held and self.held + size > self.limit:
            return False
        self._add(size)
        return True

    def release(self, size: int) -> None:
        self._add(-size)

    def _add(self, size: int) -> None:
        self.held += size
        if self._on_change is not None:
            self._on_change(self.held)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_rows: int
    inline_bytes: int
    retry_after_seconds: int


class _Refused(Exception):
    """An answer decided before scoring (key, model, size, admission)."""

    def __init__(self, status: int, body: bytes, headers: list | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or []


class InvocationsMiddleware:
    """Serves ``POST /invocations``; passes everything else to ``app``.

    ``slot`` holds the live model (``slot.model``, ``slot.problem``); ``check_key`` maps a
    header getter to None or ``(status, message, error_code)``; ``lookup`` (a
    ``serving.lookup.Lookup``, None without an online store) fills rows sent by key.
    """

    def __init__(self, app, *, slot, batcher: Batcher, admission: Admission, limits: Limits,
                 parsing: Executor, metrics: ServerMetrics, log: InferenceLog | None,
                 check_key: Callable[[Callable[[str], str | None]], tuple | None],
                 lookup: Any = None) -> None:
        self.app = app
        self.lookup = lookup
        self.slot, self.batcher, self.admission, self.limits = slot, batcher, admission, limits
        self.parsing, self.metrics, self.log, self.check_key = parsing, metrics, log, check_key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _send(send, 405, protocol.error_body(f"use POST {PATH}", "BAD_REQUEST"),
                        [(b"allow", b"POST")])
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            status, body, extra = await self._answer(headers, receive)
        except _Refused as refused:
            status, body, extra = refused.status, refused.body, refused.headers
        await _send(send, status, body, extra)

    async def _answer(self, headers: dict[str, str], receive) -> tuple[int, bytes, list]:
        refusal = self.check_key(headers.get)
        if refusal is not None:
            status, message, code = refusal
            raise _Refused(status, protocol.error_body(message, code))
        model = self.slot.model
        if model is None:
            raise _Refused(503, protocol.error_body(f"no model is loaded: {self.slot.problem}",
                                                    "MODEL_NOT_READY"))
        received = time.time()
        declared = headers.get("content-length", "")
        held = int(declared) if declared.isdigit() else 0
        if held > self.limits.max_body_bytes:
            raise _Refused(413, protocol.error_body(_too_large(held, self.limits.max_body_bytes)))
        if not self.admission.take(held):
            raise self._busy()
        try:
            body, held = await self._read(receive, held)
            signature = protocol.Signature(model.columns, model.signature.inputs,
                                           model.signature.params)
            content_type = headers.get("content-type")
            if len(body) <= self.limits.inline_bytes:
                parsed = protocol.parse_request(body, content_type, signature, self.limits.max_rows,
                                                self.lookup)
            else:
                parsed = await asyncio.get_running_loop().run_in_executor(
                    self.parsing, protocol.parse_request, body, content_type, signature,
                    self.limits.max_rows, self.lookup)
            del body
            answer = await self.batcher.score(model, parsed)
        except protocol.RequestError as exc:
            return exc.status, protocol.error_body(exc), []
        finally:
            self.admission.release(held)
        request_id = headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        self.metrics.rows.inc(parsed.inputs.rows)
        if self.log is not None:
            self.log.append(Record(request_id, received, model.name, model.version,
                                   parsed.inputs.columns, answer.predictions))
        body = answer.body if parsed.looked_up is None else _with_lookups(answer.body, parsed.looked_up)
        return 200, body, [(b"x-request-id", request_id.encode()),
                                  (b"x-model-version", model.version.encode())]

    async def _read(self, receive, held: int) -> tuple[bytes, int]:
        """The body, counted against admission as it arrives beyond the ``held`` bytes
        already taken for it; returns it with the bytes now held."""
        chunks, size, more, taken = [], 0, True, held
        try:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise protocol.RequestError("the client went away", 400)
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                size += len(chunk)
                if size > self.limits.max_body_bytes:
                    raise _too_large(size, self.limits.max_body_bytes)
                if size > taken:
                    if not self.admission.take(size - taken):
                        raise self._busy()
                    taken = size
                chunks.append(chunk)
        except BaseException:
            self.admission.release(taken - held)  # the caller releases ``held``
            raise
        return b"".join(chunks), taken

    def _busy(self) -> _Refused:
        self.metrics.rejected.inc()
        wait = self.limits.retry_after_seconds
        body = protocol.error_body(
            f"the server holds {self.admission.held} bytes of requests and this one would "
            f"pass the limit of {self.admission.limit} (--max-pending-bytes): retry after "
            f"{wait} s", "TEMPORARILY_UNAVAILABLE")
        return _Refused(503, body, [(b"retry-after", str(wait).encode())])


def _with_lookups(body: bytes, looked_up: list[dict]) -> bytes:
    """The encoded predictions object with ``"online"``: what was looked up per row (spliced
    in rather than decoding and encoding the predictions again)."""
    return body[:-1] + b', "online": ' + json.dumps(looked_up).encode() + b"}"


def _too_large(size: int, limit: int) -> protocol.RequestError:
    return protocol.RequestError(
        f"request body of {size} bytes exceeds the limit of {limit} bytes (--max-body-bytes)",
        status=413,
        code="REQUEST_TOO_LARGE",
    )


async def _send(send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON, (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
