"""Evidently HTML reports as artifacts of an MLflow monitoring run, one run per window and
model version (experiment ``<uc>-monitoring``), so a task and the dashboard can link to them.

A rerun of a window finds its run by tags and overwrites the artifacts instead of adding a
second run.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from esteira.config import Settings
from esteira.usecase import UseCase

if TYPE_CHECKING:
    from evidently.core.report import Snapshot
    from mlflow import MlflowClient

ARTIFACT_DIR = "monitoring"
_TAG = "esteira."


@dataclass(frozen=True)
class ReportRef:
    run_id: str
    experiment_id: str
    artifact_uri: str
    """URI of the first report's HTML file (the drift report)."""
    url: str
    """The run's artifacts page in the MLflow UI."""


def experiment_name(uc: UseCase) -> str:
    return f"{uc.name}-monitoring"


def log_report(
    settings: Settings,
    uc: UseCase,
    reports: Mapping[str, Snapshot],
    *,
    model_version: str,
    window_start: dt.datetime,
    window_end: dt.datetime,
    run_label: str,
    metrics: Mapping[str, float],
) -> ReportRef:
    """Save each snapshot as ``<name>.html`` under the run's ``monitoring/`` artifacts.

    ``metrics`` are logged on the run at the window's end time, for MLflow's charts.
    """
    from mlflow.entities import Metric

    from esteira import tracking

    if not reports:
        raise ValueError("no report to log")
    client = tracking.client(settings)
    tags = {
        f"{_TAG}model_name": uc.model_name,
        f"{_TAG}model_version": str(model_version),
        f"{_TAG}window_start": window_start.isoformat(),
        f"{_TAG}window_end": window_end.isoformat(),
        f"{_TAG}run_label": run_label,
    }
    experiment_id = tracking.ensure_experiment(client, experiment_name(uc))
    run_id = _find_or_create_run(client, experiment_id, tags, window_start)
    with tempfile.TemporaryDirectory() as folder:
        for name, snapshot in reports.items():
            snapshot.save_html(str(Path(folder) / f"{name}.html"))
        client.log_artifacts(run_id, folder, artifact_path=ARTIFACT_DIR)
    timestamp = int(window_end.replace(tzinfo=dt.UTC).timestamp() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(key, float(value), timestamp, 0) for key, value in metrics.items()],
        tags=[],
    )
    client.set_tag(run_id, f"{_TAG}run_label", run_label)
    client.set_terminated(run_id, "FINISHED")
    run = client.get_run(run_id)
    first = next(iter(reports))
    base = settings.mlflow_ui_url.rstrip("/")
    return ReportRef(
        run_id=run_id,
        experiment_id=experiment_id,
        artifact_uri=f"{run.info.artifact_uri}/{ARTIFACT_DIR}/{first}.html",
        url=f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts",
    )


def _find_or_create_run(
    client: MlflowClient, experiment_id: str, tags: Mapping[str, str], window_start: dt.datetime
) -> str:
    keys = (f"{_TAG}model_version", f"{_TAG}window_start")
    query = " and ".join(f"tags.`{key}` = '{tags[key]}'" for key in keys)
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    name = f"v{tags[f'{_TAG}model_version']}-{window_start:%Y-%m-%dT%H%M}"
    return client.create_run(experiment_id, tags=dict(tags), run_name=name).info.run_id
