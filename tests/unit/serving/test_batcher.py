"""Concurrent requests share one model call, keep their own rows, and only a bad one fails."""

from __future__ import annotations

import asyncio
import datetime as dt

import numpy as np
import pytest

from esteira.serving.model_loader import ColumnSpec, LoadedModel
from esteira.serving.protocol import Inputs, RequestError
from esteira.serving.server import Batcher


def doubling_model(calls: list[int]) -> LoadedModel:
    def predict(frame):
        calls.append(len(frame))
        if (frame["x"] < 0).any():
            raise ValueError("negative x")
        return frame["x"].to_numpy() * 2

    return LoadedModel(name="m", version="1", run_id="r", loaded_at=dt.datetime(2026, 1, 1),
                       columns=(ColumnSpec("x", "double"),), predict=predict, predict_proba=None,
                       input_example=None, serving_example=None)


def inputs(*values: float) -> Inputs:
    return Inputs(columns={"x": np.array(values, dtype=np.float64)}, rows=len(values))


def test_concurrent_requests_are_scored_in_one_call_with_their_own_rows():
    calls: list[int] = []
    model = doubling_model(calls)

    async def scenario():
        batcher = Batcher(max_rows=100)
        return await asyncio.gather(*(batcher.predict(model, inputs(i, i + 0.5)) for i in range(5)))

    results = asyncio.run(scenario())

    assert [r.tolist() for r in results] == [[2 * i, 2 * i + 1] for i in range(5)]
    assert calls == [10]


def test_a_bad_request_fails_alone():
    calls: list[int] = []
    model = doubling_model(calls)

    async def scenario():
        batcher = Batcher(max_rows=100)
        return await asyncio.gather(
            batcher.predict(model, inputs(1)), batcher.predict(model, inputs(-1)),
            batcher.predict(model, inputs(3)), return_exceptions=True,
        )

    good, bad, other = asyncio.run(scenario())

    assert good.tolist() == [2] and other.tolist() == [6]
    assert isinstance(bad, RequestError) and "negative x" in str(bad)
    assert calls == [3, 1, 1, 1]


@pytest.mark.parametrize(("max_rows", "expected_calls"), [(4, [4, 2]), (1, [2, 2, 2])])
def test_max_rows_bounds_a_call(max_rows, expected_calls):
    calls: list[int] = []
    model = doubling_model(calls)

    async def scenario():
        batcher = Batcher(max_rows=max_rows)
        await asyncio.gather(*(batcher.predict(model, inputs(1, 2)) for _ in range(3)))

    asyncio.run(scenario())
    assert calls == expected_calls
