"""Concurrent requests share one model call, keep their own rows, and every one is answered."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from esteira.serving.model_loader import ColumnSpec, LoadedModel
from esteira.serving.protocol import Inputs, Request, RequestError
from esteira.serving.scoring import Batcher


def doubling_model(calls: list[int]) -> LoadedModel:
    def predict(frame):
        calls.append(len(frame))
        if (frame["x"] < 0).any():
            raise ValueError("negative x")
        return frame["x"].to_numpy() * 2

    return LoadedModel(name="m", version="1", run_id="r", loaded_at=dt.datetime(2026, 1, 1),
                       columns=(ColumnSpec("x", "double"),), predict=predict, predict_proba=None,
                       input_example=None, serving_example=None)


def request(*values: float) -> Request:
    return Request(Inputs(columns={"x": np.array(values, dtype=np.float64)}, rows=len(values)))


def predictions(answer) -> list:
    return json.loads(answer.body)["predictions"]


@pytest.mark.parametrize("threaded", [False, True])
def test_concurrent_requests_are_scored_in_one_call_with_their_own_rows(threaded):
    calls: list[int] = []
    model = doubling_model(calls)

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(max_rows=100, executor=pool if threaded else None)
            return await asyncio.gather(*(batcher.score(model, request(i, i + 0.5)) for i in range(5)))

    answers = asyncio.run(scenario())

    assert [predictions(a) for a in answers] == [[2 * i, 2 * i + 1] for i in range(5)]
    assert calls == [10]


def test_a_bad_request_fails_alone():
    calls: list[int] = []
    model = doubling_model(calls)

    async def scenario():
        batcher = Batcher(max_rows=100)
        return await asyncio.gather(
            batcher.score(model, request(1)), batcher.score(model, request(-1)),
            batcher.score(model, request(3)), return_exceptions=True,
        )

    good, bad, other = asyncio.run(scenario())

    assert predictions(good) == [2] and predictions(other) == [6]
    assert isinstance(bad, RequestError) and "negative x" in str(bad) and bad.status == 400
    assert calls == [3, 1, 1, 1]


@pytest.mark.parametrize(("max_rows", "expected_calls"), [(4, [4, 2]), (1, [2, 2, 2])])
def test_max_rows_bounds_a_call(max_rows, expected_calls):
    calls: list[int] = []
    model = doubling_model(calls)

    async def scenario():
        batcher = Batcher(max_rows=max_rows)
        await asyncio.gather(*(batcher.score(model, request(1, 2)) for _ in range(3)))

    asyncio.run(scenario())
    assert calls == expected_calls


def test_every_request_of_a_batch_is_answered_when_scoring_itself_fails():
    """A failure outside the model (here: the answer cannot be encoded) is a 500 for each."""
    model = doubling_model([])
    broken = LoadedModel(**{**model.__dict__, "predict": lambda frame: [object()] * len(frame)})

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(max_rows=100, executor=pool)
            results = await asyncio.wait_for(asyncio.gather(
                *(batcher.score(broken, request(i)) for i in range(4)), return_exceptions=True),
                timeout=10)
            after = await batcher.score(model, request(5))
            return results, after

    results, after = asyncio.run(scenario())

    assert all(isinstance(r, RequestError) and r.status == 500 for r in results)
    assert all("scoring failed" in str(r) for r in results)
    assert predictions(after) == [10]
