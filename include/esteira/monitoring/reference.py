"""The monitoring reference of a model version: a seeded, label-stratified sample of its
training set, scored by the model, taken once when the version is registered and stored
with it.

Why once: rebuilding the point-in-time training set for every window read the whole
training window (and joined it) on every run; the sample is all drift and estimation use.
The sample is a Parquet artifact of the version's training run (``monitoring_reference/``,
not beside the model files, which the server downloads on every load), and the version's
``monitoring_reference`` tag (`esteira.registry.lineage.ReferenceRecord`) says where it is,
how many rows it was drawn from and its digest. Each row keeps the model's score and the
time split it fell in, so quality estimation can calibrate on the rows the model did not
train on.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from esteira.config import Settings
from esteira.monitoring.estimation import SCORE_COLUMN, SPLIT_COLUMN
from esteira.monitoring.sampling import Sample, sample_frame
from esteira.registry.lineage import (
    LineageError,
    ReferenceRecord,
    VersionRecord,
    read_version,
    record_reference,
)
from esteira.usecase import UseCase

if TYPE_CHECKING:
    import pandas as pd

    from esteira.serving.model_loader import LoadedModel

log = logging.getLogger("esteira.monitoring")

ARTIFACT_DIR = "monitoring_reference"
ARTIFACT_FILE = "reference.parquet"


def take_reference(
    uc: UseCase,
    settings: Settings,
    version: int | str,
    record: VersionRecord,
    model: LoadedModel | None = None,
) -> ReferenceRecord:
    """Sample the version's training set (at the Delta versions of its lineage), score the
    sample with the model, store it with the version and record where; returns the record.

    Deterministic (the training seed), so a retry stores the same sample again. Raises
    LineageError when the version's lineage does not name its training set.
    """
    from esteira import tracking
    from esteira.features.training_set import build_training_set
    from esteira.serving.model_loader import load_version

    if record.run_id is None or record.feature_version is None or record.labels_version is None:
        raise LineageError(f"{uc.model_name} v{version} has no training-set lineage to take a reference from")
    start, end = record.window()
    frame, _ = build_training_set(
        uc, settings, start, end, version=record.feature_version, labels_version=record.labels_version
    )
    classifier = uc.problem_type == "binary_classification"
    seed = uc.training.seed
    sample = sample_frame(
        _with_split(uc, frame), uc.monitoring.sample_size, seed, stratify_by=uc.label.column if classifier else None
    )
    del frame
    model = model or load_version(settings, uc.model_name, str(version), compiled_threads=None)
    scored = _scored(uc, model, sample.frame)
    client = tracking.client(settings)
    with tempfile.TemporaryDirectory(prefix="esteira-reference-") as tmp:
        path = Path(tmp) / ARTIFACT_FILE
        _write(uc, scored, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        client.log_artifact(record.run_id, str(path), ARTIFACT_DIR)
    reference = ReferenceRecord(
        run_id=record.run_id,
        path=f"{ARTIFACT_DIR}/{ARTIFACT_FILE}",
        rows=sample.source_rows,
        sampled=sample.sampled_rows,
        seed=seed,
        sha256=digest,
    )
    record_reference(uc, version, reference, settings)
    log.info("%s v%s: monitoring reference of %d rows sampled from %d, stored at %s",
             uc.model_name, version, reference.sampled, reference.rows, reference.uri)
    return reference


def load_reference(
    uc: UseCase,
    settings: Settings,
    version: int | str,
    record: VersionRecord,
    model: LoadedModel | None = None,
) -> Sample:
    """The version's stored reference, as a Sample of its training set.

    A version registered before references were stored has none: its reference is taken
    now, from the training set at its lineage's Delta versions, and stored, so this happens
    once per version rather than once per window. Raises ValueError when the stored file's
    digest differs from the one recorded.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from esteira import tracking

    reference = record.reference
    if reference is None:
        log.warning("%s v%s was registered without a monitoring reference: taking it now, once",
                    uc.model_name, version)
        reference = take_reference(uc, settings, version, record, model)
    with tempfile.TemporaryDirectory(prefix="esteira-reference-") as tmp:
        local = tracking.client(settings).download_artifacts(reference.run_id, reference.path, tmp)
        digest = hashlib.sha256(Path(local).read_bytes()).hexdigest()
        if digest != reference.sha256:
            raise ValueError(
                f"the monitoring reference {reference.uri} of {uc.model_name} v{version} does not "
                f"match its recorded digest (sha256 {digest[:12]}..., recorded {reference.sha256[:12]}...)"
            )
        frame = pq.ParquetFile(local).read(use_threads=False).to_pandas()
    pa.default_memory_pool().release_unused()  # the decoded file: hand it back before Evidently runs
    stratify = uc.label.column if uc.problem_type == "binary_classification" else None
    return Sample(frame, source_rows=reference.rows, seed=reference.seed, stratify_by=stratify)


def _with_split(uc: UseCase, frame: pd.DataFrame) -> pd.DataFrame:
    """The training set's feature and label columns, each row tagged with its time split."""
    import pandas as pd

    from esteira.training.split import time_split

    parts = time_split(uc, frame).parts()
    columns = [*uc.feature_names, uc.label.column]
    return pd.concat(
        [part[columns].assign(**{SPLIT_COLUMN: name}) for name, part in parts.items()], ignore_index=True
    )


def _scored(uc: UseCase, model: LoadedModel, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the model's score: the positive-class probability of a classifier,
    the prediction of a regressor."""
    import numpy as np

    inputs = frame[model.column_names]
    if uc.problem_type == "binary_classification" and model.predict_proba is not None:
        score = np.asarray(model.predict_proba(inputs))[:, 1]
    else:
        score = np.asarray(model.predict(inputs))
    return frame.assign(**{SCORE_COLUMN: score.astype("float64")})


def _write(uc: UseCase, frame: pd.DataFrame, path: Path) -> None:
    """The sample as Parquet, typed as the feature table types its columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from esteira import tables

    label_type = pa.int64() if uc.problem_type == "binary_classification" else pa.float64()
    schema = pa.schema(
        [(f.name, tables.arrow_type(f.type)) for f in uc.features.definitions]
        + [(uc.label.column, label_type), (SPLIT_COLUMN, pa.string()), (SCORE_COLUMN, pa.float64())]
    )
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    pq.write_table(table, path)



def ensure_reference(uc: UseCase, settings: Settings, version: int | str) -> ReferenceRecord:
    """The version's reference record, taking and storing the reference if it has none
    yet (a retry of a registration finds the one it stored)."""
    record = read_version(uc, version, settings)
    return record.reference or take_reference(uc, settings, version, record)
