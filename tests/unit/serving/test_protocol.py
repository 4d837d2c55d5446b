"""Request bodies become typed columns in signature order, or a RequestError naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esteira.serving.model_loader import ColumnSpec
from esteira.serving.protocol import RequestError, encode_predictions, parse_request

SPEC = (
    ColumnSpec("plan", "string"),
    ColumnSpec("charges", "double"),
    ColumnSpec("tickets", "long"),
    ColumnSpec("active", "boolean"),
)


def test_all_json_formats_give_the_same_columns_in_signature_order():
    records = [
        {"active": True, "tickets": 2, "charges": 10, "plan": "basic"},
        {"active": False, "tickets": 0, "charges": None, "plan": None},
    ]
    names = ["tickets", "plan", "charges", "active"]
    bodies = [
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": records},
        {"inputs": {n: [r[n] for r in records] for n in names}},
        {"dataframe_split": {"columns": names, "data": [[r[n] for n in names] for r in records]}},
        {"dataframe_split": {"columns": names, "data": [[r[n] for n in names] for r in records],
                             "index": [7, 8]}, "params": {}},
    ]
    for body in bodies:
        inputs = parse_request(json.dumps(body).encode(), "application/json", SPEC)
        assert list(inputs.columns) == ["plan", "charges", "tickets", "active"]
        assert inputs.rows == 2
        assert inputs.columns["plan"].tolist() == ["basic", None]
        assert inputs.columns["charges"].dtype == np.float64
        assert np.isnan(inputs.columns["charges"][1])
        assert inputs.columns["tickets"].dtype == np.int64
        assert inputs.columns["active"].tolist() == [True, False]


def test_csv_empty_cells_are_missing_values():
    body = b"plan,charges,tickets,active\nbasic,1.5,3,true\n,,0,False\n"
    inputs = parse_request(body, "text/csv; charset=utf-8", SPEC)
    assert inputs.columns["plan"].tolist() == ["basic", None]
    assert inputs.columns["charges"][0] == 1.5 and np.isnan(inputs.columns["charges"][1])
    assert inputs.columns["tickets"].tolist() == [3, 0]
    assert inputs.columns["active"].tolist() == [True, False]
    assert inputs.frame().shape == (2, 4)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": {"plan": ["a"], "charges": [1.0], "tickets": [None], "active": [True]}},
         "column 'tickets' (long) row 0: expected an integer, got null"),
        ({"inputs": {"plan": ["a"], "charges": [1.0], "tickets": [1], "active": [1]}},
         "column 'active' (boolean) row 0: expected true or false, got an integer 1"),
        ({"inputs": {"plan": ["a"], "charges": [1.0], "tickets": [2**70], "active": [True]}},
         "column 'tickets' (long)"),
        ({"inputs": [1, 2]}, "row 0 must be an object"),
        ({"inputs": 5}, "must be a list of objects (rows) or an object of lists"),
        ({"inputs": [], "params": 3}, "'params' must be an object"),
        ({"dataframe_split": {"data": [[1]]}}, "must have 'columns' and 'data'"),
        ({"dataframe_split": {"columns": ["plan", "plan"], "data": []}}, "names a column twice"),
    ],
)
def test_type_and_shape_errors_name_the_problem(body, message):
    with pytest.raises(RequestError) as caught:
        parse_request(json.dumps(body).encode(), "application/json", SPEC)
    assert message in str(caught.value)
    assert caught.value.status == 400


def test_missing_content_type_is_415():
    with pytest.raises(RequestError) as caught:
        parse_request(b"{}", None, SPEC)
    assert caught.value.status == 415


def test_predictions_keep_mlflows_response_shape():
    assert json.loads(encode_predictions(np.array([1, 0]))) == {"predictions": [1, 0]}
    assert json.loads(encode_predictions(np.array([[0.2, 0.8]]))) == {"predictions": [[0.2, 0.8]]}
