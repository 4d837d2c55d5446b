"""One way to say "nothing to do", and the same across a job's result line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from esteira.compute.job import parse_result, result_line
from esteira.results import NothingToDo, from_json, to_json


def test_nothing_to_do_survives_a_result_line():
    line = result_line(NothingToDo("no raw events delivered for [2026-06-01, 2026-06-02)"))
    assert parse_result(f"some log\n{line}\n") == NothingToDo("no raw events delivered for [2026-06-01, 2026-06-02)")


def test_a_reference_survives_a_result_line_as_plain_json():
    reference = {"version": 3, "end": dt.date(2026, 3, 1), "uri": Path("/tmp/t")}
    assert parse_result(result_line(reference)) == {"version": 3, "end": "2026-03-01", "uri": "/tmp/t"}


def test_a_reference_with_more_keys_is_not_mistaken_for_nothing_to_do():
    payload = {"nothing_to_do": "x", "version": 1}
    assert from_json(payload) == payload
    assert to_json(from_json({"nothing_to_do": "x"})) == {"nothing_to_do": "x"}
