"""Request bodies become typed columns in signature order, or a RequestError naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esteira.serving.model_loader import ColumnSpec
from esteira.serving.protocol import CSV_MISSING, RequestError, encode_predictions, parse_request

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
        inputs = parse_request(json.dumps(body).encode(), "application/json", SPEC).inputs
        assert list(inputs.columns) == ["plan", "charges", "tickets", "active"]
        assert inputs.rows == 2
        assert inputs.columns["plan"].tolist()[0] == "basic"  # null: see the per-format test
        assert inputs.columns["charges"].dtype == np.float64
        assert np.isnan(inputs.columns["charges"][1])
        assert inputs.columns["tickets"].dtype == np.int64
        assert inputs.columns["active"].tolist() == [True, False]


def test_csv_empty_cells_are_nan_as_pandas_reads_them():
    body = b"plan,charges,tickets,active\nbasic,1.5,3,true\n,,0,False\nNA,NaN,1,TRUE\n"
    inputs = parse_request(body, "text/csv; charset=utf-8", SPEC).inputs
    plan = inputs.columns["plan"].tolist()
    assert plan[0] == "basic" and np.isnan(plan[1]) and np.isnan(plan[2])
    assert inputs.columns["charges"][0] == 1.5 and np.isnan(inputs.columns["charges"][1])
    assert inputs.columns["tickets"].tolist() == [3, 0, 1]
    assert inputs.columns["active"].tolist() == [True, False, True]
    assert inputs.frame().shape == (3, 4)


def test_csv_missing_strings_are_pandas_defaults():
    from pandas._libs.parsers import STR_NA_VALUES

    assert CSV_MISSING == STR_NA_VALUES


def test_null_strings_follow_mlflow_per_format():
    """MLflow keeps null in dataframe_* formats and makes it "None" in instances/inputs."""
    row = {"plan": None, "charges": 1.0, "tickets": 1, "active": True}
    split = {"columns": list(row), "data": [list(row.values())]}
    seen = {
        key: parse_request(json.dumps({key: body}).encode(), "application/json", SPEC)
        .inputs.columns["plan"].tolist()
        for key, body in [("dataframe_records", [row]), ("dataframe_split", split),
                          ("instances", [row]), ("inputs", [row])]
    }
    assert seen == {"dataframe_records": [None], "dataframe_split": [None],
                    "instances": ["None"], "inputs": ["None"]}


def test_extra_columns_and_top_level_keys_are_ignored():
    row = {"plan": "a", "charges": 1.0, "tickets": 1, "active": True, "colour": "red"}
    parsed = parse_request(json.dumps({"inputs": [row], "signature_name": "x"}).encode(),
                           "application/json", SPEC)
    assert list(parsed.inputs.columns) == ["plan", "charges", "tickets", "active"]


def test_more_rows_than_the_limit_is_413_naming_it():
    row = {"plan": "a", "charges": 1.0, "tickets": 1, "active": True}
    with pytest.raises(RequestError) as caught:
        parse_request(json.dumps({"dataframe_records": [row] * 3}).encode(), "application/json",
                      SPEC, max_rows=2)
    assert caught.value.status == 413 and "the limit is 2 (--max-rows)" in str(caught.value)


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
        ({"dataframe_split": {"data": [[1]], "rows": 1}}, "must have 'data'"),
        ({"dataframe_split": {"data": [[1]]}}, "has no 'columns'"),
        ({"dataframe_split": {"columns": ["plan", "plan"], "data": []}}, "names a column twice"),
    ],
)
def test_type_and_shape_errors_name_the_problem(body, message):
    with pytest.raises(RequestError) as caught:
        parse_request(json.dumps(body).encode(), "application/json", SPEC)
    assert message in str(caught.value)
    assert caught.value.status == 400


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json; charset=latin-1",
                                          "application/json; something=else"])
def test_unsupported_content_types_are_415(content_type):
    with pytest.raises(RequestError) as caught:
        parse_request(b"{}", content_type, SPEC)
    assert caught.value.status == 415


def test_predictions_keep_mlflows_response_shape():
    assert json.loads(encode_predictions(np.array([1, 0]))) == {"predictions": [1, 0]}
    assert json.loads(encode_predictions(np.array([[0.2, 0.8]]))) == {"predictions": [[0.2, 0.8]]}


def test_probabilities_are_one_record_per_row():
    answer = encode_predictions(np.array([1, 0]), np.array([[0.2, 0.8], [0.9, 0.1]]), [0, 1])
    assert json.loads(answer) == {"predictions": [{"prediction": 1, "probability": 0.8},
                                                  {"prediction": 0, "probability": 0.1}]}
