"""MLflow's scoring protocol: request bodies to typed columns, predictions to the response.

Accepted as ``mlflow models serve`` accepts them: JSON with one of ``dataframe_split``,
``dataframe_records``, ``instances``, ``inputs`` (other top-level keys are ignored, as
MLflow ignores them), ``params`` checked against the model's params schema by MLflow's
own rules, CSV with a header row, or Parquet. Columns the signature does not name are
ignored.

Two paths give one answer. The fast path builds numpy columns straight from the parsed
body (no pandas) when every value already has its column's type. Anything else (a
number sent as a string, a missing optional column, rows with different keys...) goes
through MLflow's own parser and schema enforcement, the code ``mlflow models serve``
runs: what MLflow accepts is scored on the rows MLflow built, what it refuses gets
MLflow's status and ``error_code``, with a message naming the problem. Where MLflow would
answer 500 or plain text, the answer is a JSON 4xx instead (README lists these).

The fast path reproduces MLflow's view of missing strings, which depends on the format:
``null`` stays missing in ``dataframe_*``, becomes the string ``"None"`` in ``instances``
and ``inputs`` (MLflow converts those columns with numpy's ``str``), and an empty CSV
cell is NaN (pandas' ``read_csv``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from esteira.serving.model_loader import ColumnSpec

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
PARQUET_TYPE = "application/vnd.apache.parquet"
CONTENT_TYPES = (JSON_TYPE, CSV_TYPE, PARQUET_TYPE)

_NUMERIC = {"double": np.float64, "float": np.float32}
_INTEGER = {"long": np.int64, "integer": np.int32}
# pandas.read_csv's default missing-value strings (pandas._libs.parsers.STR_NA_VALUES)
CSV_MISSING = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})
_LLM_KEYS = frozenset({"messages", "prompt", "input"})  # MLflow's unwrapped chat/completion bodies
_UNWRAPPED = "unwrapped JSON"
_CSV_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_CSV_INTEGER = re.compile(r"[+-]?\d+")
_CSV_TRUE = frozenset({"True", "TRUE", "true"})
_CSV_FALSE = frozenset({"False", "FALSE", "false"})


class RequestError(ValueError):
    """A client error: ``status`` is the HTTP status, ``code`` MLflow's error code."""

    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Inputs:
    """Rows as one numpy array per signature column, in signature order."""

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


@dataclass(frozen=True)
class Request:
    """One parsed ``/invocations`` body: its rows and its validated ``params``."""

    inputs: Inputs
    params: dict[str, Any] = field(default_factory=dict)
    looked_up: list[dict] | None = None  # per row, what the online store gave (serving.lookup)


@dataclass(frozen=True)
class Signature:
    """What a request is checked against: the model's columns and MLflow's schemas.

    ``inputs`` (an MLflow Schema) enables the MLflow path; without it a request the
    fast path cannot take is refused with the fast path's message.
    """

    columns: tuple[ColumnSpec, ...]
    inputs: Any = None
    params: Any = None  # MLflow ParamSchema, or None when the model declares no params


def parse_request(
    body: bytes, content_type: str | None, signature: Signature | Sequence[ColumnSpec],
    max_rows: int | None = None, lookup: Any = None,
) -> Request:
    """Parse and check one ``/invocations`` body; RequestError names what is wrong.

    More rows than ``max_rows`` is a 413 naming the limit, checked before any column
    is built. ``lookup`` (a ``serving.lookup.Lookup``) fills the inputs a JSON or CSV body
    leaves out from the online store.
    """
    if not isinstance(signature, Signature):
        signature = Signature(tuple(signature))
    mime = _mime(content_type)
    if mime == JSON_TYPE:
        return _json_request(body, signature, max_rows, lookup)
    if mime == CSV_TYPE:
        looked_up = None
        try:
            names, raw = _csv_columns(body, max_rows)
            if lookup is not None:
                sent = set(raw)
                raw, looked_up = lookup.fill(raw, [c.name for c in signature.columns])
                raw = {n: v if n in sent else [_as_text(x) for x in v] for n, v in raw.items()}
            return Request(_typed(signature.columns, names, raw, _from_text), looked_up=looked_up)
        except _Deferred as refusal:
            if looked_up is not None:  # MLflow's parser would not see the looked-up columns
                raise refusal.error from None
            return Request(_as_mlflow(signature, CSV_TYPE, body, refusal.error, max_rows))
    return Request(_as_mlflow(signature, PARQUET_TYPE, body, None, max_rows))


def encode_predictions(predictions: Any, probabilities: Any = None, classes: Any = None) -> bytes:
    """``{"predictions": [...]}``, the shape ``mlflow models serve`` answers with.

    With ``probabilities`` (one column per class), one record per row instead:
    ``{"prediction": label, "probability": p}`` (see ``pyfunc_flavor``).
    """
    if probabilities is None:
        return json.dumps({"predictions": to_jsonable(predictions)}).encode()
    from esteira.serving.pyfunc_flavor import probability_columns

    names = probability_columns(classes)
    picked = probabilities[:, 1:] if len(names) == 1 else probabilities
    labels = to_jsonable(predictions)
    columns = [picked[:, i].astype(np.float64).tolist() for i in range(len(names))]
    records = [
        {"prediction": label, **dict(zip(names, values, strict=True))}
        for label, *values in zip(labels, *columns, strict=True)
    ]
    return json.dumps({"predictions": records}).encode()


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


class _Deferred(Exception):
    """The fast path cannot take this body as it is; MLflow's path decides."""

    def __init__(self, error: RequestError) -> None:
        super().__init__(str(error))
        self.error = error


def _defer(message: str) -> _Deferred:
    return _Deferred(RequestError(message))


def _mime(content_type: str | None) -> str:
    if not content_type:
        raise RequestError(
            f"missing Content-Type header: use {JSON_TYPE}, {CSV_TYPE} or {PARQUET_TYPE}",
            status=415,
            code="UNSUPPORTED_MEDIA_TYPE",
        )
    mime, *params = (part.strip() for part in content_type.split(";"))
    mime = mime.lower()
    if mime not in CONTENT_TYPES:
        raise RequestError(
            f"unsupported Content-Type '{mime}': use {JSON_TYPE}, {CSV_TYPE} or {PARQUET_TYPE}",
            status=415,
            code="UNSUPPORTED_MEDIA_TYPE",
        )
    for param in params:
        key, _, value = param.partition("=")
        key = key.strip().lower()
        if key != "charset":
            raise RequestError(f"unsupported Content-Type parameter '{key}': only charset is "
                               "accepted", status=415, code="UNSUPPORTED_MEDIA_TYPE")
        if value.strip().lower() != "utf-8":
            raise RequestError(
                f"unsupported charset '{value.strip()}': send UTF-8",
                status=415,
                code="UNSUPPORTED_MEDIA_TYPE",
            )
    return mime


def _json_request(body: bytes, signature: Signature, max_rows: int | None, lookup: Any = None) -> Request:
    if not body.strip():
        raise RequestError(f"empty request body: send JSON with one of {', '.join(FORMATS)}, "
                           "CSV with a header row, or Parquet")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(f"malformed JSON body: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError(
            f"the JSON body must be an object with exactly one of {', '.join(FORMATS)}; "
            f"got {_kind(doc)}"
        )
    if _LLM_KEYS.intersection(doc):
        unwrapped = RequestError(f"a body with {', '.join(sorted(_LLM_KEYS.intersection(doc)))} "
                                 "is a chat or completion request, which a model over columns "
                                 "does not take")
        return Request(_as_mlflow(signature, _UNWRAPPED, doc, unwrapped, max_rows))
    keys = [k for k in doc if k in FORMATS]
    if len(keys) != 1:
        found = ", ".join(repr(k) for k in doc) or "no keys"
        raise RequestError(
            f"the JSON body must have exactly one of {', '.join(FORMATS)} "
            f"(and optionally 'params'); found {found}"
        )
    key = keys[0]
    _check_rows(key, doc[key], max_rows)
    params = _params(doc.get("params"), signature.params, "params" in doc)
    looked_up = None
    try:
        names, raw = _json_columns(key, doc[key])
        if lookup is not None:
            raw, looked_up = lookup.fill(raw, [c.name for c in signature.columns])
        null_string = "None" if key in ("instances", "inputs") else None
        inputs = _typed(signature.columns, list(raw), raw,
                        lambda spec, values: _from_json(spec, values, null_string))
    except _Deferred as refusal:
        if looked_up is not None:  # MLflow's parser would not see the looked-up columns
            raise refusal.error from None
        inputs = _as_mlflow(signature, JSON_TYPE, {key: doc[key]}, refusal.error, max_rows)
    return Request(inputs, params, looked_up)


def _check_rows(key: str, data: Any, max_rows: int | None) -> None:
    if max_rows is None:
        return
    if key == "dataframe_split" and isinstance(data, dict):
        rows = data.get("data")
    elif isinstance(data, dict):
        rows = next(iter(data.values()), [])
    else:
        rows = data
    if isinstance(rows, list) and len(rows) > max_rows:
        raise _too_many(len(rows), max_rows)


def _too_many(rows: int, max_rows: int) -> RequestError:
    return RequestError(f"the request has {rows} rows; the limit is {max_rows} (--max-rows): "
                        "split it into smaller requests", status=413, code="REQUEST_TOO_LARGE")


def _params(given: Any, schema: Any, present: bool) -> dict[str, Any]:
    """The request's params as MLflow validates them (unknown keys dropped, defaults added)."""
    if schema is None:
        return {}  # MLflow ignores params (even malformed ones) the model does not declare
    defaults = {p.name: p.default for p in schema.params}
    if not present:
        return defaults
    from mlflow.exceptions import MlflowException
    from mlflow.models.utils import _enforce_params_schema

    try:
        return _enforce_params_schema(given, schema)
    except MlflowException as exc:
        raise RequestError(f"invalid 'params': {exc.message}", exc.get_http_status_code(),
                           exc.error_code) from None


def _json_columns(key: str, data: Any) -> tuple[list[str], dict[str, list]]:
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
    raise _defer(f"'{key}' must be a list of objects (rows) or an object of lists (columns); "
                 f"got {_kind(data)}")


def _split(data: Any) -> tuple[list[str], dict[str, list]]:
    if not isinstance(data, dict):
        raise RequestError(
            f"'dataframe_split' must be an object with 'columns' and 'data'; got {_kind(data)}"
        )
    extra = set(data) - {"columns", "data", "index"}
    if extra or "data" not in data:
        raise RequestError(
            "'dataframe_split' must have 'data' (and optionally 'columns' and 'index'); "
            f"found {', '.join(repr(k) for k in data) or 'no keys'}"
        )
    if "columns" not in data:
        raise _defer("'dataframe_split' has no 'columns': the model needs named columns")
    names, rows = data["columns"], data["data"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _defer("'dataframe_split.columns' must be a list of column names (strings)")
    if len(set(names)) != len(names):
        raise _defer(f"'dataframe_split.columns' names a column twice: {names}")
    if not isinstance(rows, list):
        raise _defer(f"'dataframe_split.data' must be a list of rows; got {_kind(rows)}")
    width = len(names)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise _defer(
                f"'dataframe_split.data' row {i} must be a list of {width} values "
                f"(one per column); got {_kind(row)}"
                + (f" of length {len(row)}" if isinstance(row, list) else "")
            )
    if not rows:
        raise _defer("the request has no rows to score")
    return names, dict(zip(names, (list(col) for col in zip(*rows, strict=True)), strict=True))


def _records(key: str, records: list) -> tuple[list[str], dict[str, list]]:
    if not records:
        raise _defer("the request has no rows to score")
    first = records[0]
    if not isinstance(first, dict):
        raise _defer(f"'{key}' row 0 must be an object (column -> value); got {_kind(first)}")
    names = list(first)
    expected = first.keys()
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise _defer(f"'{key}' row {i} must be an object (column -> value); got {_kind(record)}")
        if record.keys() != expected:
            missing = sorted(set(expected) - set(record))
            extra = sorted(set(record) - set(expected))
            raise _defer(
                f"'{key}' row {i} has different columns than row 0"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; extra: {', '.join(extra)}" if extra else "")
            )
    return names, {n: [r[n] for r in records] for n in names}


def _columnar(key: str, data: dict) -> tuple[list[str], dict[str, list]]:
    lengths = {}
    for name, values in data.items():
        if not isinstance(values, list):
            raise _defer(f"'{key}' column '{name}' must be a list of values; got {_kind(values)}")
        lengths[name] = len(values)
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{n}: {k}" for n, k in lengths.items())
        raise _defer(f"'{key}' columns have different lengths ({detail})")
    return list(data), data


def _csv_columns(body: bytes, max_rows: int | None) -> tuple[list[str], dict[str, list]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the CSV body is not valid UTF-8: {exc}") from None
    if text.startswith("\ufeff") or "\r" in text or '"' in text:
        raise _defer("CSV with quotes, a byte-order mark or CR line ends: parsed by pandas")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if rows and not rows[-1]:
        rows.pop()
    if not rows or any(not row for row in rows):
        raise _defer("the CSV body has no header row, or blank lines")
    names, data = rows[0], rows[1:]
    if max_rows is not None and len(data) > max_rows:
        raise _too_many(len(data), max_rows)
    if len(set(names)) != len(names):
        raise _defer(f"the CSV header names a column twice: {names}")
    for i, row in enumerate(data):
        if len(row) != len(names):
            raise _defer(f"CSV line {i + 2} has {len(row)} fields; the header has {len(names)}")
    if not data:
        raise _defer("the request has no rows to score")
    return names, dict(zip(names, (list(col) for col in zip(*data, strict=True)), strict=True))


def _typed(spec: Sequence[ColumnSpec], names: list[str], raw: dict[str, list], convert) -> Inputs:
    missing = [c.name for c in spec if c.name not in raw]
    if missing:
        expected = ", ".join(c.name for c in spec)
        raise _defer(f"missing column(s): {', '.join(missing)}. The model expects: {expected}")
    rows = len(raw[spec[0].name]) if spec else 0
    return Inputs(columns={c.name: convert(c, raw[c.name]) for c in spec}, rows=rows)


def _from_json(spec: ColumnSpec, values: list, null_string: str | None) -> np.ndarray:
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
        if null_string is not None and None in values:
            values = [null_string if v is None else v for v in values]
        return np.array(values, dtype=object)
    if kind in _INTEGER:
        for i, v in enumerate(values):
            if type(v) is not int:
                _wrong(spec, i, v, "an integer")
        return _array(spec, values, _INTEGER[kind])
    if kind == "boolean":
        for i, v in enumerate(values):
            if type(v) is not bool:
                _wrong(spec, i, v, "true or false")
        return np.array(values, dtype=bool)
    raise _defer(f"column '{spec.name}' has type {kind}: parsed by MLflow")


def _as_text(value: Any) -> str:
    """A stored value as a CSV cell reads it back: missing as empty, floats by their exact
    shortest repr."""
    return "" if value is None else str(value)


def _from_text(spec: ColumnSpec, values: list[str]) -> np.ndarray:
    kind = spec.type
    if kind == "string":
        return np.array([math.nan if v in CSV_MISSING else v for v in values], dtype=object)
    if kind in _NUMERIC:
        out = []
        for i, v in enumerate(values):
            if v in CSV_MISSING:
                out.append(math.nan)
            elif _CSV_NUMBER.fullmatch(v):
                out.append(float(v))
            else:
                _wrong(spec, i, v, "a number")
        return _array(spec, out, _NUMERIC[kind])
    if kind in _INTEGER:
        for i, v in enumerate(values):
            if not _CSV_INTEGER.fullmatch(v):
                _wrong(spec, i, v, "an integer")
        return _array(spec, [int(v) for v in values], _INTEGER[kind])
    if kind == "boolean":
        for i, v in enumerate(values):
            if v not in _CSV_TRUE and v not in _CSV_FALSE:
                _wrong(spec, i, v, "true or false")
        return np.array([v in _CSV_TRUE for v in values], dtype=bool)
    raise _defer(f"column '{spec.name}' has type {kind}: parsed by MLflow")


def _array(spec: ColumnSpec, values: list, dtype) -> np.ndarray:
    try:
        return np.array(values, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as exc:
        raise _defer(f"column '{spec.name}' ({spec.type}): {exc}") from None


def _wrong(spec: ColumnSpec, row: int, value: Any, expected: str) -> None:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    raise _defer(
        f"column '{spec.name}' ({spec.type}) row {row}: expected {expected}, "
        f"got {_kind(value)} {shown}"
    )


def _as_mlflow(signature: Signature, mime: str, payload: Any, refusal: RequestError | None,
               max_rows: int | None = None) -> Inputs:
    """The rows as ``mlflow models serve`` builds them, or its refusal.

    MLflow's refusal keeps its status and error_code; the message is the fast path's when
    it named the problem. An exception MLflow does not turn into a 4xx (a 500 there) is
    answered with the fast path's 4xx.
    """
    if signature.inputs is None:
        if refusal is None:
            raise RequestError(f"{mime} bodies need the model's MLflow signature", 415,
                               "UNSUPPORTED_MEDIA_TYPE")
        raise refusal
    from mlflow.exceptions import MlflowException
    from mlflow.models.utils import _enforce_schema
    from mlflow.pyfunc import scoring_server

    try:
        if mime == _UNWRAPPED:
            frame = payload
        elif mime == JSON_TYPE:
            frame = scoring_server.infer_and_parse_data(payload, signature.inputs)
        elif mime == CSV_TYPE:
            frame = scoring_server.parse_csv_input(io.StringIO(payload.decode("utf-8")),
                                                   signature.inputs)
        else:
            frame = scoring_server.parse_parquet_input(io.BytesIO(payload))
    except MlflowException as exc:
        message = str(refusal) if refusal is not None else exc.message.splitlines()[0]
        raise RequestError(message, exc.get_http_status_code(), exc.error_code) from None
    except Exception as exc:  # MLflow would answer 500 here
        if refusal is not None:
            raise refusal from None
        raise RequestError(f"cannot read the {mime} body: {exc}") from None
    try:
        frame = _enforce_schema(frame, signature.inputs)
    except Exception as exc:  # pyfunc's predict turns any of these into INVALID_PARAMETER_VALUE
        message = str(refusal) if refusal is not None else f"the rows do not fit the signature: {exc}"
        raise RequestError(message, 400, "INVALID_PARAMETER_VALUE") from None
    return _frame_inputs(frame, signature.columns, max_rows)


def _frame_inputs(frame: Any, spec: Sequence[ColumnSpec], max_rows: int | None) -> Inputs:
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    missing = [c.name for c in spec if c.name not in frame.columns]
    if missing:
        raise RequestError(f"missing column(s): {', '.join(missing)}. "
                           f"The model expects: {', '.join(c.name for c in spec)}")
    if max_rows is not None and len(frame) > max_rows:
        raise _too_many(len(frame), max_rows)
    return Inputs({c.name: frame[c.name].to_numpy() for c in spec}, len(frame))


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


def frame_request(frame: Any, spec: Sequence[ColumnSpec], fmt: str) -> tuple[str, bytes]:
    """``frame`` as a request body in ``fmt`` (``dataframe_split`` or ``csv``), as a client
    sends it: the compiled model is checked against sklearn on what the server parses."""
    names = [c.name for c in spec]
    if fmt == "csv":
        return CSV_TYPE, frame[names].to_csv(index=False).encode()
    values = frame[names].astype(object)
    rows = values.where(values.notna(), None).to_numpy().tolist()
    return JSON_TYPE, json.dumps({"dataframe_split": {"columns": names, "data": rows}}).encode()

