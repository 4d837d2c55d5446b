"""A fitted scikit-learn pipeline as one ONNX graph, and the check that it answers the same.

The conversion works on a copy of the pipeline, adjusted where skl2onnx 1.20's defaults
differ from what sklearn computes:

- numbers enter and are preprocessed in float64, as in sklearn, then cast to float32
  before a tree ensemble, as sklearn's trees do. skl2onnx's own imputer works in float32,
  and a median imputed one ulp off lands on the other side of a tree threshold that was
  learned from that very median: labels differed on 2 of 3,000 rows until this.
- an ONNX string cannot be missing, so the server feeds ``None`` and NaN in a string
  column as sentinels (``compiled.NONE_STRING``, ``compiled.NAN_STRING``), and the copy's
  imputers and one-hot categories name the sentinels where sklearn names ``None`` or NaN.
  sklearn imputes NaN but keeps ``None`` as a category of its own; the two sentinels keep
  that difference.
- sklearn 1.9 gives histogram-boosting trees uint32 child ids and skl2onnx passes Python
  booleans for leaves' missing-value flags; onnx 1.23 refuses both in an integer
  attribute. The copy's nodes carry int64 ids, and its boosting models convert through
  a wrapper that turns boolean attributes into integers.

Whether the graph is equivalent is never assumed: ``check`` compares it with sklearn.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, is_classifier
from sklearn.ensemble import (
    BaseEnsemble,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import BaseDecisionTree

from esteira.serving.compiled import STRING_TYPES, CompiledModel, is_nan, sentinel
from esteira.serving.model_loader import ColumnSpec

PROBABILITY_TOLERANCE = 1e-5
REGRESSION_TOLERANCE = 1e-5  # relative to max(|value|, 1)


class ConversionError(ValueError):
    """The pipeline holds a step that cannot be converted faithfully."""


@dataclass(frozen=True)
class Equivalence:
    """How the compiled graph compared with sklearn on ``rows`` rows; ``reason`` when not."""

    equivalent: bool
    rows: int
    reason: str = ""
    label_mismatches: int = 0
    max_difference: float = 0.0


def convert(pipeline: Any, columns: Sequence[ColumnSpec]) -> bytes:
    """The fitted pipeline as a serialized ONNX model, one ``[None, 1]`` input per column.

    Raises ConversionError naming the step skl2onnx (or an adjustment) could not handle.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    _register_converters()
    prepared = _for_conversion(pipeline)
    inputs = [
        (c.name, StringTensorType([None, 1]) if c.type in STRING_TYPES else DoubleTensorType([None, 1]))
        for c in columns
    ]
    final = prepared.steps[-1][1]
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    try:
        graph = convert_sklearn(prepared, initial_types=inputs, options=options)
    except Exception as exc:  # skl2onnx raises anything from RuntimeError to TypeError
        raise ConversionError(f"{type(exc).__name__}: {_first_line(exc)}") from exc
    return graph.SerializeToString()


def check(pipeline: Any, compiled: CompiledModel, frame: Any, columns: Mapping[str, np.ndarray]) -> Equivalence:
    """Compare sklearn on ``frame`` with the graph on the same rows parsed as ``columns``.

    Labels must be identical; probabilities within PROBABILITY_TOLERANCE; regression
    values within REGRESSION_TOLERANCE of max(|value|, 1).
    """
    rows = len(frame)
    if rows == 0:
        return Equivalence(False, 0, "no test rows to check the compiled model against")
    try:
        labels, probabilities = compiled.run(columns)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
        return Equivalence(False, rows, f"onnxruntime failed on the test set: {_first_line(exc)}")
    expected = np.asarray(pipeline.predict(frame))
    if probabilities is not None:
        mismatches = int((labels != expected).sum())
        diff = float(np.abs(np.asarray(pipeline.predict_proba(frame)) - probabilities).max())
        if mismatches:
            return Equivalence(False, rows, f"{mismatches} of {rows} labels differ from sklearn's",
                               mismatches, diff)
        if not diff <= PROBABILITY_TOLERANCE:
            return Equivalence(False, rows, f"probabilities differ from sklearn's by up to {diff:.3g} "
                               f"(tolerance {PROBABILITY_TOLERANCE:g})", 0, diff)
        return Equivalence(True, rows, "", 0, diff)
    scale = np.maximum(np.abs(expected.astype(np.float64)), 1.0)
    diff = float((np.abs(expected - labels) / scale).max())
    if not diff <= REGRESSION_TOLERANCE:
        return Equivalence(False, rows, f"predictions differ from sklearn's by up to {diff:.3g} "
                           f"relative (tolerance {REGRESSION_TOLERANCE:g})", 0, diff)
    return Equivalence(True, rows, "", 0, diff)


def _for_conversion(pipeline: Any) -> Pipeline:
    from skl2onnx.sklapi import CastTransformer

    prepared = copy.deepcopy(pipeline)
    if not isinstance(prepared, Pipeline):
        prepared = Pipeline([("model", prepared)])
    _adjust(prepared)
    if isinstance(prepared.steps[-1][1], BaseEnsemble | BaseDecisionTree):
        prepared.steps.insert(len(prepared.steps) - 1, ("to_float32", CastTransformer(dtype=np.float32)))
    return prepared


def _adjust(estimator: Any) -> Any:
    """Adjust ``estimator`` and its sub-steps in place; returns what stands in for it."""
    if hasattr(estimator, "steps"):
        estimator.steps = [(name, _adjust(step)) for name, step in estimator.steps]
    elif hasattr(estimator, "transformers_"):
        estimator.transformers_ = [
            (name, step if isinstance(step, str) else _adjust(step), cols)
            for name, step, cols in estimator.transformers_
        ]
    elif isinstance(estimator, SimpleImputer):
        if estimator.add_indicator:
            raise ConversionError("SimpleImputer(add_indicator=True) cannot be converted")
        if estimator._fit_dtype.kind != "O":
            return _NanImputer.of(estimator)
        estimator.missing_values = sentinel(estimator.missing_values)
    elif isinstance(estimator, OneHotEncoder):
        estimator.categories_ = [
            np.array([sentinel(c) for c in cats], dtype=object) if cats.dtype.kind == "O" else cats
            for cats in estimator.categories_
        ]
    elif isinstance(estimator, _BOOSTING):
        _int64_child_ids(estimator)
        estimator.__class__ = _BOOLEAN_SAFE[type(estimator)]
    return estimator


def _int64_child_ids(model: Any) -> None:
    for predictors in model._predictors:
        for predictor in predictors:
            nodes = predictor.nodes
            wide = np.dtype([(n, np.int64 if n in ("left", "right") else nodes.dtype[n])
                             for n in nodes.dtype.names])
            predictor.nodes = nodes.astype(wide)


class _NanImputer(TransformerMixin, BaseEstimator):
    """A numeric SimpleImputer's fitted values, converted in the input's own precision."""

    def __init__(self, statistics: np.ndarray | None = None) -> None:
        self.statistics = statistics

    @classmethod
    def of(cls, imputer: SimpleImputer) -> _NanImputer:
        if not is_nan(imputer.missing_values) and imputer.missing_values is not None:
            raise ConversionError(
                f"SimpleImputer(missing_values={imputer.missing_values!r}) on numbers cannot "
                "be converted (only NaN)"
            )
        statistics = np.asarray(imputer.statistics_, dtype=np.float64)
        if np.isnan(statistics).any():
            raise ConversionError("a SimpleImputer column had no values at fit time")
        return cls(statistics)


class _HistGradientBoostingClassifier(HistGradientBoostingClassifier):
    """Converted through ``_exact_boosting``."""


class _HistGradientBoostingRegressor(HistGradientBoostingRegressor):
    """Converted through ``_exact_boosting``."""


_BOOSTING = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
_BOOLEAN_SAFE = {
    HistGradientBoostingClassifier: _HistGradientBoostingClassifier,
    HistGradientBoostingRegressor: _HistGradientBoostingRegressor,
    _HistGradientBoostingClassifier: _HistGradientBoostingClassifier,
    _HistGradientBoostingRegressor: _HistGradientBoostingRegressor,
}


@cache
def _register_converters() -> None:
    """Our stand-ins' converters, registered once per process under names of their own."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from skl2onnx.operator_converters.random_forest import (
        convert_sklearn_random_forest_classifier,
        convert_sklearn_random_forest_regressor_converter,
    )
    from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes

    update_registered_converter(
        _NanImputer, "EsteiraNanImputer", calculate_sklearn_imputer_output_shapes, _convert_nan_imputer
    )
    update_registered_converter(
        _HistGradientBoostingClassifier, "EsteiraHistGradientBoostingClassifier",
        calculate_linear_classifier_output_shapes,
        _exact_boosting(convert_sklearn_random_forest_classifier),
        options={"zipmap": [True, False, "columns"], "raw_scores": [True, False],
                 "output_class_labels": [False, True], "nocl": [True, False]},
    )
    update_registered_converter(
        _HistGradientBoostingRegressor, "EsteiraHistGradientBoostingRegressor",
        calculate_linear_regressor_output_shapes,
        _exact_boosting(convert_sklearn_random_forest_regressor_converter),
        options={"raw_scores": [True, False]},
    )


def _convert_nan_imputer(scope, operator, container) -> None:
    from skl2onnx.common.data_types import guess_numpy_type, guess_proto_type
    from skl2onnx.operator_converters.common import concatenate_variables

    statistics = operator.raw_operator.statistics.astype(guess_numpy_type(operator.inputs[0].type))
    features = concatenate_variables(scope, operator.inputs, container)
    fill = scope.get_unique_variable_name("fill")
    container.add_initializer(fill, guess_proto_type(operator.inputs[0].type),
                              [statistics.size], statistics.tolist())
    missing = scope.get_unique_variable_name("missing")
    container.add_node("IsNaN", [features], [missing])
    container.add_node("Where", [missing, fill, features], [operator.outputs[0].full_name])


def _exact_boosting(convert):
    """A histogram-boosting converter that keeps sklearn's float64 comparisons.

    These models compare float64 inputs with float64 thresholds that are training values
    themselves (``x <= 0.08`` with x = 0.08 goes left), so a threshold rounded to float32
    sends such rows the other way. ai.onnx.ml opset 3 carries the thresholds and weights
    as double tensors; onnxruntime's tree kernels still emit float, so the tree writes a
    float tensor that is cast to the double the graph declares. Boolean attributes (leaf
    flags from skl2onnx) become the integers onnx requires.
    """

    def converter(scope, operator, container) -> None:
        from onnx.numpy_helper import from_array
        from skl2onnx.proto import onnx_proto

        add_node = container.add_node

        def add_exact_node(op_type, inputs, outputs, **attributes):
            for key, value in list(attributes.items()):
                if isinstance(value, list) and any(isinstance(v, bool | np.bool_) for v in value):
                    attributes[key] = [int(v) for v in value]
            if not op_type.startswith("TreeEnsemble"):
                return add_node(op_type, inputs, outputs, **attributes)
            for key in _DOUBLE_TREE_ATTRIBUTES:
                if key in attributes:
                    values = np.asarray(attributes.pop(key), dtype=np.float64).ravel()
                    attributes[f"{key}_as_tensor"] = from_array(values)
            outputs = [outputs] if isinstance(outputs, str) else list(outputs)
            scores = len(outputs) - 1  # the regressor's only output, the classifier's second
            declared = outputs[scores]
            outputs[scores] = scope.get_unique_variable_name(f"{declared}_float")
            add_node(op_type, inputs, outputs, **attributes)
            return add_node("Cast", [outputs[scores]], [declared], to=onnx_proto.TensorProto.DOUBLE)

        container.add_node = add_exact_node
        try:
            convert(scope, operator, container, op_version=3)
        finally:
            del container.add_node

    return converter


_DOUBLE_TREE_ATTRIBUTES = ("nodes_values", "nodes_hitrates", "base_values", "target_weights", "class_weights")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
