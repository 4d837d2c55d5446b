"""The compiled path at serving time: an ONNX graph run by onnxruntime on parsed columns.

One row through the churn pipeline costs ~9 ms in sklearn (mostly the ColumnTransformer
on a one-row frame) and ~0.05 ms in onnxruntime when the inputs are numpy arrays; going
through a pandas frame to build those arrays costs 3 ms again. So the graph takes the
request's parsed columns directly. The graph is made and checked when a version is
registered (``serving.compilation``); its tags say whether it is equivalent and, if
not, why, and the server falls back to the sklearn pipeline then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from esteira.serving.model_loader import ColumnSpec

STRING_TYPES = frozenset({"string"})
NONE_STRING = "\x00esteira:none"
NAN_STRING = "\x00esteira:nan"
_OTHER_PREFIX = "\x00esteira:value:"  # a non-string in a string column: never a known category
TAG_PREFIX = "compiled_"
_FLOAT32_SAFE = 1e30  # far below float32's 3.4e38 even after scaling


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def sentinel(value: Any) -> Any:
    """The string the graph sees for a value sklearn would see in a string column."""
    if value is None:
        return NONE_STRING
    if is_nan(value):
        return NAN_STRING
    return value


@dataclass(frozen=True)
class CompiledRecord:
    """What a model version's tags say about its compiled form."""

    equivalent: bool
    reason: str  # why the server must use sklearn; empty when equivalent
    uri: str  # the ONNX artifact; empty when conversion failed
    rows_checked: int
    max_difference: float
    converter: str  # package versions that made the graph

    def to_tags(self) -> dict[str, str]:
        return {
            f"{TAG_PREFIX}equivalent": str(self.equivalent).lower(),
            f"{TAG_PREFIX}reason": self.reason,
            f"{TAG_PREFIX}uri": self.uri,
            f"{TAG_PREFIX}rows_checked": str(self.rows_checked),
            f"{TAG_PREFIX}max_difference": repr(float(self.max_difference)),
            f"{TAG_PREFIX}converter": self.converter,
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> CompiledRecord | None:
        """The record, or None when the version was registered without being compiled."""
        if f"{TAG_PREFIX}equivalent" not in tags:
            return None
        return cls(
            equivalent=tags[f"{TAG_PREFIX}equivalent"] == "true",
            reason=tags.get(f"{TAG_PREFIX}reason", ""),
            uri=tags.get(f"{TAG_PREFIX}uri", ""),
            rows_checked=int(tags.get(f"{TAG_PREFIX}rows_checked", "0") or 0),
            max_difference=float(tags.get(f"{TAG_PREFIX}max_difference", "nan") or "nan"),
            converter=tags.get(f"{TAG_PREFIX}converter", ""),
        )


def load_compiled(
    settings: Any, tags: Mapping[str, str], columns: Sequence[ColumnSpec], threads: int | None
) -> tuple[CompiledModel | None, str]:
    """The version's compiled model when its tags say it is equivalent, else why not.

    A graph that cannot be downloaded or opened is a reason, not an error: the version
    is still served, by sklearn.
    """
    if threads is None:
        return None, "compiled scoring is turned off"
    record = CompiledRecord.from_tags(tags)
    if record is None:
        return None, "the version was registered without a compiled model"
    if not record.equivalent:
        return None, record.reason
    import tempfile
    from pathlib import Path

    import mlflow

    try:
        with tempfile.TemporaryDirectory(prefix="esteira-onnx-") as tmp:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=record.uri, dst_path=tmp, tracking_uri=settings.tracking_uri
            )
            return CompiledModel(Path(path).read_bytes(), columns, threads), ""
    except Exception as exc:  # a download or onnxruntime error: serve with sklearn instead
        return None, f"cannot load the compiled model {record.uri}: {exc}"


class CompiledModel:
    """An onnxruntime session over one converted pipeline, fed from parsed columns.

    ``threads`` is onnxruntime's intra-op pool: one per server worker by default, since
    the server already overlaps requests and a second pool thread only contends with it.
    """

    def __init__(self, onnx_model: bytes, columns: Sequence[ColumnSpec], threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self._columns = tuple((c.name, c.type in STRING_TYPES) for c in columns)
        self._outputs = [o.name for o in self._session.get_outputs()][:2]

    @property
    def is_classifier(self) -> bool:
        return len(self._outputs) == 2

    def takes(self, columns: Mapping[str, np.ndarray], rows: int) -> bool:
        """Whether the graph answers these rows as sklearn would.

        sklearn refuses no rows, infinities and values beyond float32 (in the trees'
        cast); the graph would answer them. Those rows go to sklearn, which decides.
        """
        if rows == 0:
            return False
        numbers = [columns[name] for name, is_string in self._columns if not is_string]
        if not numbers:
            return True
        try:
            values = np.concatenate(numbers).astype(np.float64, copy=False)
        except (TypeError, ValueError):
            return False
        return not (np.abs(values) > _FLOAT32_SAFE).any()  # NaN compares False: it is imputed

    def run(self, columns: Mapping[str, np.ndarray], probabilities: bool = True
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (or regression values) and, for a classifier asked for them, the class
        probabilities."""
        wanted = self._outputs if probabilities else self._outputs[:1]
        out = self._session.run(wanted, self.feed(columns))
        return _shortest(out[0].ravel()), (_shortest(out[1]) if len(out) == 2 else None)

    def feed(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            name: _strings(columns[name]) if is_string
            else np.asarray(columns[name], dtype=np.float64).reshape(-1, 1)
            for name, is_string in self._columns
        }


def _shortest(values: np.ndarray) -> np.ndarray:
    """float32 results as the float64 nearest their 7 significant digits.

    Without it a probability of 0.83 reads 0.8299999833106995 in the JSON answer where
    sklearn says 0.83; the change is below float32's own precision.
    """
    if values.dtype != np.float32:
        return values
    wide = values.astype(np.float64)
    finite = np.isfinite(wide) & (wide != 0)
    digits = 7 - np.ceil(np.log10(np.abs(wide, where=finite, out=np.ones_like(wide))))
    scale = np.power(10.0, digits)
    return np.where(finite, np.round(wide * scale) / scale, wide)


def _strings(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=object).reshape(-1, 1)
    for i, value in enumerate(out[:, 0]):
        if not isinstance(value, str):
            out[i, 0] = sentinel(value) if value is None or is_nan(value) else f"{_OTHER_PREFIX}{value!r}"
    return out
