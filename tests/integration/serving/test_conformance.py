"""MLflow's scoring-server test cases, replayed against ``mlflow models serve`` and Esteira.

The cases are those of MLflow's ``tests/pyfunc/test_scoring_server.py`` (malformed and
non-object JSON, wrong orientations, invalid frames, empty CSV, each format, charset and
unknown content-type parameters, typed columns, the params schema, ``/version``) on this
use case's model, plus paths of MLflow's scoring code that test does not reach (missing
Content-Type, Parquet, extra columns and keys, conversions, missing and optional columns,
params that are not an object, deep nesting...). MLflow's own app (``scoring_server.init``,
what ``mlflow models serve`` runs) and Esteira's serve the same registered version.

The rule: what MLflow answers 200, Esteira answers 200 with the same JSON; what MLflow
refuses with a JSON error, Esteira refuses with the same status and ``error_code``; the
only differences are the cases in DELIBERATE_DIFFERENCES, where MLflow answers 5xx or
without a JSON error and Esteira answers a JSON 4xx (README lists them).
"""

from __future__ import annotations

import io
import json
import math

import mlflow
import pytest
from fastapi.testclient import TestClient

from esteira.config import get_usecase
from esteira.serving.compilation import compile_version
from esteira.serving.conversion import PROBABILITY_TOLERANCE
from esteira.serving.server import ServerConfig, create_app
from tests.integration.serving import models
from tests.integration.serving.test_server import wait_ready

pytestmark = pytest.mark.integration

J = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"

DELIBERATE_DIFFERENCES = {
    "missing Content-Type": "MLflow answers 500 (it splits a None header); Esteira 415",
    "unsupported content type": "MLflow answers 415 in plain text; Esteira 415 with a JSON error",
    "unknown content-type parameter": "MLflow answers 415 in plain text; Esteira 415 in JSON",
    "charset other than UTF-8": "MLflow answers 415 in plain text; Esteira 415 in JSON",
    "deep nesting": "MLflow answers 500 (json.loads' RecursionError); Esteira 400",
    "GET /ping": "MLflow answers a bare newline; Esteira a JSON status (both 200)",
    "GET /health": "MLflow answers a bare newline; Esteira the JSON readiness (both 200 here)",
    "GET /invocations": "MLflow answers 405 with FastAPI's {detail}; Esteira 405 with a JSON error",
}


def cases(uc) -> dict[str, tuple]:
    """name -> (method, path, content type, body)."""
    frame = models.frame(uc, 4, seed=7)
    records = json.loads(frame.to_json(orient="records"))
    split = json.loads(frame.to_json(orient="split", index=False))
    split_index = json.loads(frame.to_json(orient="split"))
    columns = {c: [r[c] for r in records] for c in frame.columns}
    row = records[1]
    without = {k: v for k, v in row.items() if k != "device"}
    without_required = {k: v for k, v in row.items() if k != "plan"}
    parquet = io.BytesIO()
    frame.to_parquet(parquet)

    def post(content_type, body):
        if not isinstance(body, str | bytes):
            body = json.dumps(body)
        return ("POST", "/invocations", content_type, body)

    return {
        # tests/pyfunc/test_scoring_server.py
        "malformed JSON": post(J, "this is,,,, not valid json"),
        "JSON number": post(J, "1"),
        "JSON string": post(J, '"1"'),
        "JSON list": post(J, "[1]"),
        "no format key": post(J, {"not": "a serialized dataframe"}),
        "two format keys": post(J, {"dataframe_records": [], "dataframe_split": {"data": []}}),
        "records given a split object": post(J, {"dataframe_records": split}),
        "split given a records list": post(J, {"dataframe_split": records}),
        "split with index and data of different lengths": post(
            J, {"dataframe_split": {"index": [1, 2], "data": [[1], [2], [3]]}}),
        "incompatible frame (unnamed integer column)": post(
            J, {"dataframe_split": {"columns": [0], "data": [[i] for i in range(10)]}}),
        "empty CSV": post(CSV, ""),
        "records": post(J, {"dataframe_records": records}),
        "records, charset=UTF-8": post(f"{J}; charset=UTF-8", {"dataframe_records": records}),
        "split": post(J, {"dataframe_split": split}),
        "split with index, charset=UTF-8": post(f"{J}; charset=UTF-8", {"dataframe_split": split_index}),
        "unsupported content type": post("not_a_supported_content_type", {"dataframe_split": split}),
        "unknown content-type parameter": post(f"{J}; something=something", {"dataframe_split": split}),
        "instances": post(J, {"instances": records}),
        "inputs as columns": post(J, {"inputs": columns}),
        "inputs as records": post(J, {"inputs": records}),
        "strings that look like URLs": post(J, {"dataframe_records": [{**row, "plan": "http://foo.com"}]}),
        "params: none given": post(J, {"dataframe_split": split}),
        "params: invalid value": post(J, {"dataframe_split": split, "params": {"probabilities": "invalid"}}),
        "params: undeclared key": post(J, {"dataframe_split": split, "params": {"invalid_param": "value"}}),
        "params: probabilities": post(J, {"dataframe_split": split, "params": {"probabilities": True}}),
        "params: probabilities, instances": post(J, {"instances": records, "params": {"probabilities": True}}),
        "GET /version": ("GET", "/version", None, None),
        "GET /ping": ("GET", "/ping", None, None),
        "GET /health": ("GET", "/health", None, None),
        "GET /invocations": ("GET", "/invocations", None, None),
        # scoring-server paths that test does not reach
        "missing Content-Type": post(None, {"dataframe_split": split}),
        "charset other than UTF-8": post(f"{J}; charset=latin-1", {"dataframe_split": split}),
        "Parquet": post(PARQUET, parquet.getvalue()),
        "Parquet that is not Parquet": post(PARQUET, b"PAR1 not really"),
        "CSV": post(CSV, frame.to_csv(index=False)),
        "CSV, charset=utf-8": post(f"{CSV}; charset=utf-8", frame.to_csv(index=False)),
        "CSV with a quoted field": post(CSV, frame.assign(plan='basic, "old"').to_csv(index=False)),
        "CSV with a number that is not": post(CSV, frame.assign(monthly_charges="abc").to_csv(index=False)),
        "CSV header only": post(CSV, ",".join(frame.columns) + "\n"),
        "extra column": post(J, {"dataframe_records": [{**row, "colour": "red"}]}),
        "extra top-level key": post(J, {"dataframe_records": [row], "signature_name": "serving"}),
        "number sent as a string": post(J, {"dataframe_records": [{**row, "monthly_charges": "12.5"}]}),
        "text in a number column": post(J, {"dataframe_records": [{**row, "monthly_charges": "abc"}]}),
        "boolean in a number column": post(J, {"dataframe_records": [{**row, "monthly_charges": True}]}),
        "number in a string column": post(J, {"inputs": {**columns, "plan": [3, 3, 3, 3]}}),
        "NaN in a number column": post(J, '{"dataframe_records": [' + json.dumps(row).replace(
            f'"monthly_charges": {row["monthly_charges"]}', '"monthly_charges": NaN') + "]}"),
        "infinity in a number column": post(J, '{"dataframe_records": [' + json.dumps(row).replace(
            f'"monthly_charges": {row["monthly_charges"]}', '"monthly_charges": Infinity') + "]}"),
        "integer beyond float range": post(J, '{"dataframe_records": [' + json.dumps(row).replace(
            f'"monthly_charges": {row["monthly_charges"]}', '"monthly_charges": 1' + "0" * 400) + "]}"),
        "missing optional column": post(J, {"dataframe_records": [without]}),
        "missing required column": post(J, {"dataframe_records": [without_required]}),
        "null in a required string column": post(J, {"dataframe_records": [{**row, "plan": None}]}),
        "rows with different keys": post(J, {"dataframe_records": [row, without]}),
        "no rows (records)": post(J, {"dataframe_records": []}),
        "no rows (split)": post(J, {"dataframe_split": {"columns": list(row), "data": []}}),
        "split without columns": post(J, {"dataframe_split": {"data": [list(row.values())]}}),
        "instances as lists": post(J, {"instances": [list(row.values())]}),
        "inputs as a number": post(J, {"inputs": 5}),
        "params not an object": post(J, {"dataframe_split": split, "params": [1]}),
        "invalid UTF-8": post(J, b'{"inputs": "\xff"}'),
        "empty JSON body": post(J, ""),
        "deep nesting": post(J, "[" * 19_000),
        "LLM-style body": post(J, {"prompt": "will this customer churn?"}),
    }


@pytest.fixture(scope="module")
def compiled(uc, settings, champion):
    record = compile_version(uc, settings, champion, models.frame(uc, 300, seed=11))
    assert record.equivalent, record.reason
    return record


@pytest.fixture(scope="module")
def mlflow_serve(uc, champion):
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(f"models:/{uc.model_name}/{champion}")
    with TestClient(scoring_server.init(model), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module", params=["sklearn", "onnx"])
def esteira(request, uc, settings, compiled):
    """Esteira's server on the same version, scoring with sklearn or with the ONNX graph."""
    config = ServerConfig(poll_seconds=0, inference_log=False, compiled=request.param == "onnx")
    with TestClient(create_app(uc, settings, config)) as client:
        wait_ready(client)
        assert client.get(f"/models/{uc.name}/version").json()["scoring"] == request.param
        yield client, request.param


def send(client: TestClient, case: tuple):
    method, path, content_type, body = case
    if method == "GET":
        return client.get(path)
    headers = {} if content_type is None else {"content-type": content_type}
    return client.post(path, content=body, headers=headers)


def json_error(response) -> dict | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    return payload if isinstance(payload, dict) and "error_code" in payload else None


def same_answers(ours, theirs, tolerance: float) -> bool:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(same_answers(ours[k], theirs[k], tolerance) for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(same_answers(a, b, tolerance) for a, b in zip(ours, theirs, strict=True))
    if isinstance(ours, float) and isinstance(theirs, float):
        return math.isclose(ours, theirs, abs_tol=tolerance, rel_tol=tolerance)
    return ours == theirs


@pytest.mark.parametrize("name", list(cases(get_usecase("churn"))))
def test_each_case_answers_as_mlflow_serve_does(name, uc, esteira, mlflow_serve):
    client, scoring = esteira
    case = cases(uc)[name]
    theirs, ours = send(mlflow_serve, case), send(client, case)
    their_error, our_error = json_error(theirs), json_error(ours)

    if name in DELIBERATE_DIFFERENCES:
        assert theirs.status_code >= 500 or (their_error is None and theirs.status_code >= 400) \
            or case[1] in ("/ping", "/health"), f"{name} is no longer a difference: MLflow {theirs.status_code} {theirs.text[:200]}"
        assert ours.status_code == theirs.status_code or (400 <= ours.status_code < 500), ours.text
        if ours.status_code >= 400:
            assert our_error is not None and our_error["message"], ours.text
        return
    assert theirs.status_code < 500 and (theirs.status_code == 200 or their_error is not None), (
        f"MLflow answers {theirs.status_code} {theirs.text[:300]!r}: add it to DELIBERATE_DIFFERENCES")
    assert ours.status_code == theirs.status_code, f"ours {ours.text[:300]} / theirs {theirs.text[:300]}"
    if theirs.status_code == 200:
        if case[1] == "/version":
            assert ours.text == theirs.text
            return
        tolerance = PROBABILITY_TOLERANCE if scoring == "onnx" else 0.0
        assert same_answers(ours.json(), theirs.json(), tolerance), (ours.text[:300], theirs.text[:300])
        if name.startswith("params: probabilities"):
            assert set(ours.json()["predictions"][0]) == {"prediction", "probability"}
        return
    assert our_error is not None and our_error["error_code"] == their_error["error_code"], (
        f"ours {ours.text[:300]} / theirs {theirs.text[:300]}")
    assert our_error["message"]


def test_the_replay_covers_both_outcomes_and_the_listed_differences(uc):
    names = set(cases(uc))
    assert len(names) >= 45
    assert set(DELIBERATE_DIFFERENCES) <= names
