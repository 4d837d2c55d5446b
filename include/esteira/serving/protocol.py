"""MLflow's scoring protocol: request bodies to typed columns, predictions to the response.

Accepted like ``mlflow models serve``: JSON with exactly one of ``dataframe_split``,
``dataframe_records``, ``instances``, ``inputs`` (plus optional ``params``), or CSV with a
header row. Unlike MLflow, every problem is answered with a 4xx naming it: a missing or
unknown column, a value of the wrong type, a malformed body. Columns are built straight
into numpy arrays (no pandas parsing on the hot path).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from esteira.serving.model_loader import ColumnSpec

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"

_NUMERIC = {"double": np.float64, "float": np.float32}
_INTEGER = {"long": np.int64, "integer": np.int32}
_TRUE = {"true", "True", "TRUE", "1"}
_FALSE = {"false", "False", "FALSE", "0"}


class RequestError(ValueError):
    """A client error: ``status`` is the HTTP status, ``code`` MLflow's error code."""

    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Inputs:
    """Validated rows as one numpy array per signature column, in signature order."""

    columns: dict[str, np.ndarray]
    rows: int

    def frame(self):
        """A DataFrame over the arrays, without copies or checks (they are done).

        ``DataFrame._from_arrays`` costs a quarter of the public constructor, which is
        ~150 us of a single-row request (pandas is pinned below 3).
        """
        import pandas as pd

        return pd.DataFrame._from_arrays(
            list(self.columns.values()),
            columns=pd.Index(list(self.columns)),
            index=pd.RangeIndex(self.rows),
            verify_integrity=False,
        )


def parse_request(body: bytes, content_type: str | None, spec: Sequence[ColumnSpec]) -> Inputs:
    """Parse and check one ``/invocations`` body against the model's input columns."""
    if not body:
        raise RequestError(
            "empty request body: send JSON with one of "
            f"{', '.join(FORMATS)}, or CSV with a header row"
        )
    mime = _mime(content_type)
    if mime == CSV_TYPE:
        names, raw = _csv_columns(body)
        return _typed(spec, names, raw, _from_text)
    names, raw = _json_columns(body)
    return _typed(spec, names, raw, _from_json)


def encode_predictions(predictions: Any) -> bytes:
    """``{"predictions": [...]}``, the shape ``mlflow models serve`` answers with."""
    return json.dumps({"predictions": to_jsonable(predictions)}).encode()


def to_jsonable(predictions: Any) -> Any:
    if isinstance(predictions, np.ndarray):
        return predictions.tolist()
    if hasattr(predictions, "to_dict"):  # a pandas DataFrame or Series from a pyfunc model
        if hasattr(predictions, "columns"):
            return predictions.to_dict(orient="records")
        return predictions.tolist()
    return list(predictions)


def error_body(error: RequestError | str, code: str = "BAD_REQUEST") -> bytes:
    """MLflow's error shape: ``{"error_code": ..., "message": ...}``."""
    if isinstance(error, RequestError):
        code, message = error.code, str(error)
    else:
        message = error
    return json.dumps({"error_code": code, "message": message}).encode()


def _mime(content_type: str | None) -> str:
    if not content_type:
        raise RequestError(
            f"missing Content-Type header: use {JSON_TYPE} or {CSV_TYPE}",
            status=415,
            code="UNSUPPORTED_MEDIA_TYPE",
        )
    mime, *params = (part.strip() for part in content_type.split(";"))
    mime = mime.lower()
    if mime not in (JSON_TYPE, CSV_TYPE):
        raise RequestError(
            f"unsupported Content-Type '{mime}': use {JSON_TYPE} or {CSV_TYPE}",
            status=415,
            code="UNSUPPORTED_MEDIA_TYPE",
        )
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise RequestError(
                f"unsupported charset '{value.strip()}': send UTF-8",
                status=415,
                code="UNSUPPORTED_MEDIA_TYPE",
            )
    return mime


def _json_columns(body: bytes) -> tuple[list[str], dict[str, list]]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(f"malformed JSON body: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError(
            f"the JSON body must be an object with one of {', '.join(FORMATS)}; "
            f"got {_kind(doc)}"
        )
    keys = [k for k in doc if k in FORMATS]
    unknown = [k for k in doc if k not in FORMATS and k != "params"]
    if len(keys) != 1 or unknown:
        found = ", ".join(repr(k) for k in doc) or "no keys"
        raise RequestError(
            f"the JSON body must have exactly one of {', '.join(FORMATS)} "
            f"(and optionally 'params'); found {found}"
        )
    if "params" in doc and not isinstance(doc["params"], dict):
        raise RequestError(f"'params' must be an object; got {_kind(doc['params'])}")
    key = keys[0]
    data = doc[key]
    if key == "dataframe_split":
        return _split(data)
    if key == "dataframe_records":
        if not isinstance(data, list):
            raise RequestError(f"'dataframe_records' must be a list of objects; got {_kind(data)}")
        return _records(key, data)
    if isinstance(data, list):
        return _records(key, data)
    if isinstance(data, dict):
        return _columnar(key, data)
    raise RequestError(
        f"'{key}' must be a list of objects (rows) or an object of lists (columns); "
        f"got {_kind(data)}"
    )


def _split(data: Any) -> tuple[list[str], dict[str, list]]:
    if not isinstance(data, dict):
        raise RequestError(
            f"'dataframe_split' must be an object with 'columns' and 'data'; got {_kind(data)}"
        )
    extra = set(data) - {"columns", "data", "index"}
    if extra or "columns" not in data or "data" not in data:
        raise RequestError(
            "'dataframe_split' must have 'columns' and 'data' (and optionally 'index'); "
            f"found {', '.join(repr(k) for k in data) or 'no keys'}"
        )
    names, rows = data["columns"], data["data"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RequestError("'dataframe_split.columns' must be a list of column names (strings)")
    if len(set(names)) != len(names):
        raise RequestError(f"'dataframe_split.columns' names a column twice: {names}")
    if not isinstance(rows, list):
        raise RequestError(f"'dataframe_split.data' must be a list of rows; got {_kind(rows)}")
    width = len(names)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise RequestError(
                f"'dataframe_split.data' row {i} must be a list of {width} values "
                f"(one per column); got {_kind(row)}"
                + (f" of length {len(row)}" if isinstance(row, list) else "")
            )
    if not rows:
        return names, {n: [] for n in names}
    return names, dict(zip(names, (list(col) for col in zip(*rows, strict=True)), strict=True))


def _records(key: str, records: list) -> tuple[list[str], dict[str, list]]:
    if not records:
        raise RequestError("the request has no rows to score")
    first = records[0]
    if not isinstance(first, dict):
        raise RequestError(f"'{key}' row 0 must be an object (column -> value); got {_kind(first)}")
    names = list(first)
    expected = first.keys()
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RequestError(
                f"'{key}' row {i} must be an object (column -> value); got {_kind(record)}"
            )
        if record.keys() != expected:
            missing = sorted(set(expected) - set(record))
            extra = sorted(set(record) - set(expected))
            raise RequestError(
                f"'{key}' row {i} has different columns than row 0"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; extra: {', '.join(extra)}" if extra else "")
            )
    return names, {n: [r[n] for r in records] for n in names}


def _columnar(key: str, data: dict) -> tuple[list[str], dict[str, list]]:
    lengths = {}
    for name, values in data.items():
        if not isinstance(values, list):
            raise RequestError(
                f"'{key}' column '{name}' must be a list of values; got {_kind(values)}"
            )
        lengths[name] = len(values)
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{n}: {k}" for n, k in lengths.items())
        raise RequestError(f"'{key}' columns have different lengths ({detail})")
    return list(data), data


def _csv_columns(body: bytes) -> tuple[list[str], dict[str, list]]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the CSV body is not valid UTF-8: {exc}") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise RequestError(f"malformed CSV body: {exc}") from None
    rows = [r for r in rows if r]
    if not rows:
        raise RequestError("the CSV body has no header row")
    names, data = rows[0], rows[1:]
    if len(set(names)) != len(names):
        raise RequestError(f"the CSV header names a column twice: {names}")
    for i, row in enumerate(data):
        if len(row) != len(names):
            raise RequestError(
                f"CSV line {i + 2} has {len(row)} fields; the header has {len(names)}"
            )
    if not data:
        return names, {n: [] for n in names}
    return names, dict(zip(names, (list(col) for col in zip(*data, strict=True)), strict=True))


def _typed(spec: Sequence[ColumnSpec], names: list[str], raw: dict[str, list], convert) -> Inputs:
    expected = [c.name for c in spec]
    missing = [n for n in expected if n not in raw]
    extra = [n for n in names if n not in set(expected)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s): {', '.join(missing)}")
        if extra:
            parts.append(f"unknown column(s): {', '.join(extra)}")
        raise RequestError(f"{'; '.join(parts)}. The model expects: {', '.join(expected)}")
    rows = len(raw[expected[0]]) if expected else 0
    if rows == 0:
        raise RequestError("the request has no rows to score")
    return Inputs(columns={c.name: convert(c, raw[c.name]) for c in spec}, rows=rows)


def _from_json(spec: ColumnSpec, values: list) -> np.ndarray:
    kind = spec.type
    if kind in _NUMERIC:
        for i, v in enumerate(values):
            t = type(v)
            if t is not float and t is not int and v is not None:
                _wrong(spec, i, v, "a number or null")
        return _array(spec, values, _NUMERIC[kind])
    if kind == "string":
        for i, v in enumerate(values):
            if type(v) is not str and v is not None:
                _wrong(spec, i, v, "a string or null")
        return np.array(values, dtype=object)
    if kind in _INTEGER:
        for i, v in enumerate(values):
            if type(v) is not int and not (type(v) is float and v.is_integer()):
                _wrong(spec, i, v, "an integer")
        return _array(spec, values, _INTEGER[kind])
    if kind == "boolean":
        for i, v in enumerate(values):
            if type(v) is not bool:
                _wrong(spec, i, v, "true or false")
        return np.array(values, dtype=bool)
    return np.array(values, dtype=object)


def _from_text(spec: ColumnSpec, values: list[str]) -> np.ndarray:
    kind = spec.type
    if kind == "string":
        return np.array([v if v != "" else None for v in values], dtype=object)
    if kind in _NUMERIC:
        out = []
        for i, v in enumerate(values):
            if v == "":
                out.append(math.nan)
                continue
            try:
                out.append(float(v))
            except ValueError:
                _wrong(spec, i, v, "a number")
        return _array(spec, out, _NUMERIC[kind])
    if kind in _INTEGER:
        out = []
        for i, v in enumerate(values):
            try:
                out.append(int(v))
            except ValueError:
                _wrong(spec, i, v, "an integer")
        return _array(spec, out, _INTEGER[kind])
    if kind == "boolean":
        for i, v in enumerate(values):
            if v not in _TRUE and v not in _FALSE:
                _wrong(spec, i, v, "true or false")
        return np.array([v in _TRUE for v in values], dtype=bool)
    return np.array([v if v != "" else None for v in values], dtype=object)


def _array(spec: ColumnSpec, values: list, dtype) -> np.ndarray:
    try:
        return np.array(values, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as exc:
        raise RequestError(f"column '{spec.name}' ({spec.type}): {exc}") from None


def _wrong(spec: ColumnSpec, row: int, value: Any, expected: str) -> None:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    raise RequestError(
        f"column '{spec.name}' ({spec.type}) row {row}: expected {expected}, "
        f"got {_kind(value)} {shown}"
    )


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
