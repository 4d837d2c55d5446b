"""The registration hook: compile a new model version to ONNX and record whether it is equivalent.

Run right after a version is registered, with that version's test set. The graph is
checked against the sklearn pipeline on every test row, in the two shapes a request
can give the server (JSON, where a missing string is ``null``, and CSV, where pandas
makes it NaN), on exactly the columns the server parses from those requests. The ONNX
file is logged with the version's logged model and the version's ``compiled_*`` tags
say whether it is equivalent and why not; the server then scores with it or with
sklearn. A pipeline that cannot be converted is not an error: the tags say why.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from esteira import tracking
from esteira.config import Settings
from esteira.serving.compiled import CompiledModel, CompiledRecord
from esteira.usecase import UseCase

log = logging.getLogger(__name__)
ARTIFACT_PATH = "esteira-compiled"
ARTIFACT_FILE = "model.onnx"
_CHECKED_FORMATS = ("dataframe_split", "csv")


def compile_version(uc: UseCase, settings: Settings, version: int | str, test_frame: Any) -> CompiledRecord:
    """Convert ``models:/<uc.model_name>/<version>``, check it on ``test_frame``, record it.

    ``test_frame`` holds (at least) the model's input columns, as the gate evaluated it.
    Registry and artifact-store errors propagate; a retry compiles again and overwrites.
    """
    import onnxruntime
    import skl2onnx

    from esteira.serving import conversion, protocol
    from esteira.serving.model_loader import load_version

    client = tracking.client(settings)
    name, version = uc.model_name, str(version)
    model = load_version(settings, name, version, compiled_threads=None)
    converter = f"skl2onnx {skl2onnx.__version__}, onnxruntime {onnxruntime.__version__}"
    rows = len(test_frame)

    def record(equivalent: bool, reason: str, uri: str = "", difference: float = 0.0) -> CompiledRecord:
        result = CompiledRecord(equivalent, reason, uri, rows, difference, converter)
        for key, value in result.to_tags().items():
            client.set_model_version_tag(name, version, key, value)
        log.info("%s compiled: %s", model.uri, "equivalent" if equivalent else reason)
        return result

    if model.estimator is None:
        return record(False, "the model has no sklearn flavor to convert")
    try:
        graph = conversion.convert(model.estimator, model.columns)
    except conversion.ConversionError as exc:
        return record(False, f"skl2onnx cannot convert this pipeline: {exc}")
    compiled = CompiledModel(graph, model.columns)
    signature = protocol.Signature(model.columns, model.signature.inputs)
    checks = []
    for fmt in _CHECKED_FORMATS:
        content_type, body = protocol.frame_request(test_frame, model.columns, fmt)
        inputs = protocol.parse_request(body, content_type, signature).inputs
        checks.append((fmt, conversion.check(model.estimator, compiled, inputs.frame(), inputs.columns)))
    uri = _log_graph(client, model, graph)
    failed = [f"{fmt}: {c.reason}" for fmt, c in checks if not c.equivalent]
    difference = max(c.max_difference for _, c in checks)
    return record(not failed, "; ".join(failed), uri, difference)


def _log_graph(client, model, graph: bytes) -> str:
    """Log the graph beside the version's model files; returns its artifact URI.

    MLflow 3 versions point at a logged model (``models:/m-...``), whose artifact folder
    is what the version downloads; an older version pointing into a run gets the graph
    in that run, under a folder named after the version.
    """
    version = client.get_model_version(model.name, model.version)
    model_id = version.model_id or (
        version.source.removeprefix("models:/").split("/")[0]
        if version.source.startswith("models:/m-") else None
    )
    with tempfile.TemporaryDirectory(prefix="esteira-onnx-") as tmp:
        path = Path(tmp) / ARTIFACT_FILE
        path.write_bytes(graph)
        if model_id:
            location = client.get_logged_model(model_id).artifact_location.rstrip("/")
            client.log_model_artifact(model_id, str(path), ARTIFACT_PATH)
            return f"{location}/{ARTIFACT_PATH}/{ARTIFACT_FILE}"
        folder = f"{ARTIFACT_PATH}/{model.name}-v{model.version}"
        client.log_artifact(version.run_id, str(path), folder)
        return f"runs:/{version.run_id}/{folder}/{ARTIFACT_FILE}"
