"""Resolve a registry alias to a concrete model version, load it and warm it.

The server and the batch job load the sklearn flavor directly (skipping pyfunc's per-call
schema enforcement, which costs more than the model on one row) and call the method the
pyfunc flavor names (``predict_fn``), so answers match ``mlflow models serve``.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esteira import tracking
from esteira.config import Settings, get_usecase, load_usecases
from esteira.usecase import UseCase

_MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class ModelLoadError(RuntimeError):
    """The model version exists but cannot be downloaded, loaded or warmed."""


def served_usecases(spec: str, settings: Settings) -> list[UseCase]:
    """The use cases named by ``spec``: one name, a comma-separated list, or ``*`` for every
    use case in ``ESTEIRA_USECASES_DIR``. An unknown name raises ConfigError naming it."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if names == ["*"]:
        return load_usecases(settings)
    return [get_usecase(name, settings) for name in dict.fromkeys(names)]


@dataclass(frozen=True)
class ColumnSpec:
    """One input column of the signature: MLflow type name (``double``, ``string``...)."""

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class LoadedModel:
    """A warmed model version; immutable so that a swap is one reference assignment."""

    name: str
    version: str
    run_id: str
    loaded_at: dt.datetime
    columns: tuple[ColumnSpec, ...]
    predict: Callable[[Any], Any]
    predict_proba: Callable[[Any], Any] | None
    input_example: Any  # pandas DataFrame or None
    serving_example: dict | None
    estimator: Any = None  # the sklearn pipeline; None for a model without the sklearn flavor
    signature: Any = None  # MLflow's ModelSignature: the inputs and params schemas
    compiled: Any = None  # a serving.compiled.CompiledModel when the version has an equivalent one
    compiled_reason: str = ""  # why ``compiled`` is None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def describe(self) -> dict[str, str]:
        return {
            "model_name": self.name,
            "model_version": self.version,
            "run_id": self.run_id,
            "model_uri": self.uri,
            "loaded_at": self.loaded_at.isoformat(timespec="seconds") + "Z",
            "compiled": "onnx" if self.compiled is not None else "none",
            **({"compiled_reason": self.compiled_reason} if self.compiled is None else {}),
        }


def resolve_alias(settings: Settings, name: str, alias: str = "champion") -> str | None:
    """The version ``models:/<name>@<alias>`` points to, or None when the model or alias is absent.

    Other registry errors (server down, auth) propagate.
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(tracking.client(settings).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in _MISSING_CODES:
            return None
        raise


def load_version(
    settings: Settings, name: str, version: str, compiled_threads: int | None = 1
) -> LoadedModel:
    """Download, load and warm one model version (the caller decides when to swap it in).

    The version's compiled model is loaded too when its tags say it is equivalent, with
    ``compiled_threads`` onnxruntime threads (None: do not load it).
    """
    import json

    import mlflow
    from mlflow.models import Model

    from esteira.serving.compiled import load_compiled

    client = tracking.client(settings)
    model_version = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory(prefix="esteira-model-") as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=client.get_model_version_download_uri(name, version),
                    dst_path=tmp,
                    tracking_uri=settings.tracking_uri,
                )
            )
            meta = Model.load(str(local / "MLmodel"))
            estimator, predict, predict_proba = _load_callables(local, meta)
            example = meta.load_input_example(str(local))
            serving_path = local / "serving_input_example.json"
            serving_example = json.loads(serving_path.read_text()) if serving_path.exists() else None
        except (OSError, ValueError, mlflow.exceptions.MlflowException) as exc:
            raise ModelLoadError(f"cannot load models:/{name}/{version}: {exc}") from exc
    columns = _columns(meta)
    compiled, compiled_reason = load_compiled(settings, model_version.tags, columns, compiled_threads)
    if compiled is not None and getattr(predict, "__name__", "") != "predict":
        compiled, compiled_reason = None, f"the pyfunc flavor answers with {predict.__name__}"
    if compiled is not None and example is not None:
        try:  # warm it; a graph that fails on the model's own example is not used
            compiled.run({c.name: example[c.name].to_numpy() for c in columns})
        except Exception as exc:  # onnxruntime raises its own error types
            compiled, compiled_reason = None, f"the compiled model failed on the input example: {exc}"
    loaded = LoadedModel(
        name=name,
        version=str(version),
        run_id=model_version.run_id or "",
        loaded_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        columns=columns,
        predict=predict,
        predict_proba=predict_proba,
        input_example=example,
        serving_example=serving_example,
        estimator=estimator,
        signature=meta.signature,
        compiled=compiled,
        compiled_reason=compiled_reason,
    )
    warm(loaded)
    return loaded


def load_alias(
    settings: Settings, name: str, alias: str = "champion"
) -> LoadedModel | None:
    version = resolve_alias(settings, name, alias)
    return None if version is None else load_version(settings, name, version)


def warm(model: LoadedModel) -> None:
    """Run the input example through the model once: first calls pay lazy imports and caches."""
    if model.input_example is None:
        return
    try:
        model.predict(model.input_example)
        if model.predict_proba is not None:
            model.predict_proba(model.input_example)
    except Exception as exc:  # any model failure means this version must not go live
        raise ModelLoadError(f"{model.uri} failed on its own input example: {exc}") from exc


def _load_callables(local: Path, meta) -> tuple[Any, Callable, Callable | None]:
    flavors = meta.flavors
    if "sklearn" in flavors:
        import mlflow.sklearn

        estimator = mlflow.sklearn.load_model(str(local))
        predict_fn = flavors.get("python_function", {}).get("predict_fn", "predict")
        return estimator, getattr(estimator, predict_fn), getattr(estimator, "predict_proba", None)
    import mlflow.pyfunc

    return None, mlflow.pyfunc.load_model(str(local)).predict, None


def _columns(meta) -> tuple[ColumnSpec, ...]:
    signature = meta.signature
    if signature is None or not signature.inputs.has_input_names():
        raise ModelLoadError(
            f"model {meta.model_uuid} has no column-based input signature; Esteira serves "
            "models logged with a signature over named columns"
        )
    return tuple(
        ColumnSpec(name=c.name, type=_type_name(c.type), required=c.required)
        for c in signature.inputs.inputs
    )


def _type_name(mlflow_type) -> str:
    return getattr(mlflow_type, "name", str(mlflow_type))
