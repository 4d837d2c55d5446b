"""A model's python_function flavor that answers probabilities when the request asks.

MLflow's sklearn flavor ignores ``params``, so ``mlflow models serve`` can only answer a
classifier's labels. Models logged through ``log_model`` here keep the sklearn flavor
as it is (Esteira's server and batch scoring load it) and get a python_function loader
that reads ``{"params": {"probabilities": true}}``, declared in the signature's params
schema, and answers one record per row: ``{"prediction": 1, "probability": 0.83}`` (the
positive class's probability; for more than two classes, ``probability_<class>`` each).
Esteira's server answers the same request with the same records.

The module is self-contained (mlflow, numpy, pandas only): it is copied into each model's
``code/`` folder as ``esteira_pyfunc_flavor``, so ``mlflow models serve`` needs nothing of
Esteira installed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

PROBABILITIES = "probabilities"
LOADER_MODULE = "esteira_pyfunc_flavor"


def probability_columns(classes: Any) -> list[str]:
    """The answer's probability fields for a classifier with ``classes``."""
    classes = list(classes)
    if len(classes) == 2:
        return ["probability"]
    return [f"probability_{c}" for c in classes]


def answer_records(labels: Any, probabilities: Any, classes: Any):
    """One row per input row: the label and its probabilities, as a pandas DataFrame."""
    import numpy as np
    import pandas as pd

    probabilities = np.asarray(probabilities)
    names = probability_columns(classes)
    picked = probabilities[:, 1:] if len(names) == 1 else probabilities
    data = {"prediction": np.asarray(labels)}
    data.update({name: picked[:, i].astype(np.float64) for i, name in enumerate(names)})
    return pd.DataFrame(data)


def params_schema(sk_model: Any):
    """``probabilities: boolean = false`` for a classifier; None for anything else."""
    from mlflow.types import ParamSchema, ParamSpec

    if not (hasattr(sk_model, "predict_proba") and hasattr(sk_model, "classes_")):
        return None
    return ParamSchema([ParamSpec(PROBABILITIES, "boolean", False)])


def log_model(sk_model: Any, name: str, **kwargs: Any):
    """``mlflow.sklearn.log_model`` with the same arguments, plus this flavor's loader.

    A classifier's signature (``signature=``) gets the ``probabilities`` param.
    """
    from mlflow.models import Model

    return Model.log(name=name, flavor=sys.modules[__name__], flavor_name="sklearn",
                     artifact_path=None, sk_model=sk_model, **kwargs)


def save_model(sk_model: Any, path: str, mlflow_model=None, signature=None, **kwargs: Any) -> None:
    """``mlflow.sklearn.save_model``, then point python_function at this module's loader."""
    import mlflow.sklearn
    from mlflow.models import Model, ModelSignature

    schema = params_schema(sk_model)
    if signature is not None and schema is not None and signature.params is None:
        signature = ModelSignature(signature.inputs, signature.outputs, schema)
    mlflow.sklearn.save_model(sk_model, path, mlflow_model=mlflow_model, signature=signature, **kwargs)
    code = Path(path, "code")
    code.mkdir(exist_ok=True)
    shutil.copyfile(__file__, code / f"{LOADER_MODULE}.py")
    model = mlflow_model if mlflow_model is not None else Model.load(path)
    flavor = model.flavors["python_function"]
    flavor["loader_module"] = LOADER_MODULE
    flavor["code"] = "code"
    model.save(str(Path(path, "MLmodel")))


def _load_pyfunc(path: str) -> _ProbabilityModel:
    """python_function's entry point (``path`` is the model folder)."""
    import mlflow.sklearn
    from mlflow.models import Model

    predict_fn = Model.load(path).flavors["python_function"].get("predict_fn", "predict")
    return _ProbabilityModel(mlflow.sklearn.load_model(path), predict_fn)


class _ProbabilityModel:
    def __init__(self, sk_model: Any, predict_fn: str = "predict") -> None:
        self.sk_model = sk_model
        self._predict = getattr(sk_model, predict_fn)

    def get_raw_model(self) -> Any:
        return self.sk_model

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        labels = self._predict(data)
        if not (params or {}).get(PROBABILITIES):
            return labels
        return answer_records(labels, self.sk_model.predict_proba(data), self.sk_model.classes_)
