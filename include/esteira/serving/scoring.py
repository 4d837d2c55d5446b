"""Scoring requests: coalesced into one model call, off the event loop, each one answered.

Concurrent requests that arrive while the model runs are scored together in the next
call (sklearn's per-call overhead dwarfs a row's cost, and one onnxruntime call on 100
rows costs little more than on one). The call runs on a worker thread, so ``/ping`` and
the next requests are served meanwhile; only a compiled call on a few rows, cheaper than
the hop to a thread, runs on the loop. If the joint call fails each request is retried
alone, so only the bad one gets the error; if anything else fails, every request of the
batch gets a 500 with the reason rather than waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from esteira.serving import protocol
from esteira.serving.model_loader import LoadedModel
from esteira.serving.pyfunc_flavor import PROBABILITIES

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """The encoded response of one request, and its predictions for the inference log."""

    body: bytes
    predictions: Any


@dataclass
class _Pending:
    model: LoadedModel
    request: protocol.Request
    future: asyncio.Future


class Batcher:
    """Queues requests and scores them in batches of at most ``max_rows`` rows.

    ``executor`` runs the model calls (one worker: the calls are batched, and onnxruntime
    and numpy release the GIL). Batches of at most ``inline_rows`` rows for a compiled
    model are scored on the loop itself.
    """

    def __init__(self, max_rows: int, executor: Executor | None = None, inline_rows: int = 0,
                 on_call: Callable[[], None] | None = None) -> None:
        self.max_rows = max(max_rows, 1)
        self._executor = executor
        self._inline_rows = inline_rows
        self._on_call = on_call
        self._queue: list[_Pending] = []
        self._busy = False

    async def score(self, model: LoadedModel, request: protocol.Request) -> Answer:
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(model, request, future))
        if not self._busy:
            self._busy = True
            asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Pending] = []
        try:
            while self._queue:
                batch = self._take()
                if self._on_call is not None:
                    self._on_call()
                jobs = [(p.model, p.request) for p in batch]
                try:
                    if self._executor is None or self._inline(batch):
                        results = score_batch(jobs)
                    else:
                        results = await loop.run_in_executor(self._executor, score_batch, jobs)
                except Exception as exc:  # a bug in scoring must not leave requests waiting
                    _log.exception("scoring a batch of %d requests failed", len(batch))
                    failure = protocol.RequestError(f"scoring failed: {exc}", 500, "INTERNAL_ERROR")
                    results = [failure] * len(batch)
                for pending, result in zip(batch, results, strict=True):
                    _settle(pending.future, result)
                batch = []
                await asyncio.sleep(0)  # let requests that arrived meanwhile join the next call
        finally:
            self._busy = False
            stopped = protocol.RequestError("scoring stopped before this request was answered",
                                            503, "TEMPORARILY_UNAVAILABLE")
            for pending in [*batch, *self._queue]:
                _settle(pending.future, stopped)
            self._queue = [p for p in self._queue if not p.future.done()]

    def _inline(self, batch: list[_Pending]) -> bool:
        rows = sum(p.request.inputs.rows for p in batch)
        return batch[0].model.compiled is not None and rows <= self._inline_rows

    def _take(self) -> list[_Pending]:
        first = self._queue[0]
        batch, rows = [first], first.request.inputs.rows
        for pending in self._queue[1:]:
            if pending.model is not first.model or rows + pending.request.inputs.rows > self.max_rows:
                break
            batch.append(pending)
            rows += pending.request.inputs.rows
        del self._queue[: len(batch)]
        return batch


def score_batch(jobs: Sequence[tuple[LoadedModel, protocol.Request]]) -> list[Answer | protocol.RequestError]:
    """Score requests for one model in one call; one Answer or RequestError per request."""
    model = jobs[0][0]
    wanted = [bool(request.params.get(PROBABILITIES)) for _, request in jobs]
    inputs = [request.inputs for _, request in jobs]
    try:
        labels, probabilities = _predict(model, inputs[0] if len(inputs) == 1 else _merge(inputs),
                                         any(wanted))
    except Exception as exc:  # the model rejected some rows: find which request, as MLflow would
        if len(jobs) == 1:
            return [protocol.RequestError(f"the model could not score these rows: {exc}")]
        return [score_batch([job])[0] for job in jobs]
    classes = getattr(model.estimator, "classes_", None)
    answers: list[Answer | protocol.RequestError] = []
    start = 0
    for rows, want in zip((i.rows for i in inputs), wanted, strict=True):
        part = labels[start : start + rows]
        shown = probabilities[start : start + rows] if want and probabilities is not None else None
        answers.append(Answer(protocol.encode_predictions(part, shown, classes), part))
        start += rows
    return answers


def _predict(model: LoadedModel, inputs: protocol.Inputs, probabilities: bool) -> tuple[np.ndarray, Any]:
    if model.compiled is not None and model.compiled.takes(inputs.columns, inputs.rows):
        try:
            return model.compiled.run(inputs.columns, probabilities)
        except Exception as exc:  # onnxruntime refused an input sklearn may take: let it decide
            _log.warning("%s: the compiled model failed (%s); scoring with sklearn", model.uri, exc)
    frame = inputs.frame()
    labels = np.asarray(model.predict(frame))
    if probabilities and model.predict_proba is not None:
        return labels, np.asarray(model.predict_proba(frame))
    return labels, None


def _merge(inputs: Sequence[protocol.Inputs]) -> protocol.Inputs:
    names = inputs[0].columns
    return protocol.Inputs(
        columns={name: np.concatenate([i.columns[name] for i in inputs]) for name in names},
        rows=sum(i.rows for i in inputs),
    )


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
