"""One use case's state as the squad wants it on one page: champion and challenger with the
gate's comparison (each against the champion it was judged against, on the same test set),
the champion's lineage (feature table version -> training run -> model version -> approval ->
deployments), the registry's audit trail (every decision, each promotion with its
comparison) and the latest monitoring windows.

Everything returned is plain JSON-able data (the plugin's API serves it as is). Each part is
gathered on its own: when MLflow is down or a table does not exist yet, that part carries a
message in ``problems`` and the rest still shows.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from esteira.config import Settings
from esteira.ui import links
from esteira.usecase import UseCase

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from esteira.registry.lineage import GateRecord

T = TypeVar("T")

ALIASES = ("champion", "challenger")
MONITORING_WINDOWS = 10
CHART_WINDOWS = 90
REPORT_FILE = "monitoring/drift.html"
_TIMEOUT = 2.0
_PAST = {"promote": "promoted", "rollback": "rolled back to"}
# The audit events that show the gate's comparison of the version they name.
_COMPARED = ("promote", "register_challenger")


def mlflow_problem(tracking_uri: str, timeout: float = _TIMEOUT) -> str | None:
    """None when the tracking server answers its health check, else why not.

    Checked first because the MLflow client retries a refused connection for minutes.
    Non-HTTP tracking URIs (a local store, Databricks) are not checked.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout) as answer:
            if answer.status == 200:
                return None
            return f"MLflow at {tracking_uri} answered HTTP {answer.status} to its health check"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"MLflow is not reachable at {tracking_uri} ({reason})"


def usecase_overview(
    uc: UseCase,
    settings: Settings,
    airflow_base: str = "",
    report_base: str | None = None,
    mlflow_down: str | None = None,
) -> dict[str, Any]:
    """Everything the Esteira page shows about one use case.

    ``airflow_base``: prefix of Airflow UI paths (empty on the same origin).
    ``report_base``: where the plugin serves Evidently reports (``<base>/<run_id>``), None
    to link only to MLflow. ``mlflow_down``: a known MLflow problem (see ``mlflow_problem``),
    so several use cases share one health check.
    """
    problems: list[str] = []
    view: dict[str, Any] = {
        "name": uc.name,
        "description": uc.description,
        "owner": uc.owner,
        "model_name": uc.model_name,
        "problem_type": uc.problem_type,
        "primary_metric": uc.training.primary_metric,
        "key_metrics": key_metrics(uc),
        "require_approval": uc.registry.require_approval,
        "links": {
            "model": links.mlflow_model_url(settings.mlflow_ui_url, uc.model_name),
            "dags": {
                stage: links.airflow_dag_url(airflow_base, uc.dag_id(stage))
                for stage in ("feature_refresh", "model_training", "model_promotion",
                              "batch_inference", "drift_monitoring")
            },
        },
        "problems": problems,
        "mlflow_reachable": mlflow_down is None,
        "registered": False,
        "champion": None,
        "challenger": None,
        "lineage": [],
        "history": [],
    }
    if mlflow_down:
        problems.append(mlflow_down)
    else:
        registry = _part(problems, "MLflow registry", lambda: _registry(uc, settings, airflow_base), None)
        if registry is not None:
            view.update(registry)
    view["serving"] = _part(problems, "online model server", lambda: _serving(uc, settings), None)
    champion = view["champion"]
    if champion is not None:
        view["lineage"] = lineage_chain(champion, view["history"], view["serving"])
    view["monitoring"] = _part(
        problems,
        "monitoring table",
        lambda: monitoring_view(uc, settings, report_base, None if mlflow_down else _client(settings)),
        {"available": False, "message": "The monitoring table could not be read", "windows": [],
         "series": [], "threshold": uc.monitoring.drift_share_threshold, "latest_report": None},
    )
    return view


def key_metrics(uc: UseCase) -> list[str]:
    """The metrics the gate judges, primary first, in MLflow's names (as in gate_metrics)."""
    from esteira.evaluation.metrics import MLFLOW_NAMES

    names = [uc.training.primary_metric, *(rule.metric for rule in uc.gate.thresholds)]
    return list(dict.fromkeys(MLFLOW_NAMES.get(name, name) for name in names))


def _part(problems: list[str], what: str, gather: Callable[[], T], default: T) -> T:
    try:
        return gather()
    except Exception as exc:  # noqa: BLE001 - the page says what failed instead of a 500
        problems.append(f"{what}: {type(exc).__name__}: {str(exc)[:300]}")
        return default


def _client(settings: Settings) -> MlflowClient:
    from esteira import tracking

    return tracking.client(settings)


def _registry(uc: UseCase, settings: Settings, airflow_base: str) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    client = _client(settings)
    try:
        model = client.get_registered_model(uc.model_name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return {"registered": False}
        raise
    by_version: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    found: dict[str, Any] = {
        "registered": True,
        "history": list(reversed(history_view(client, uc, model.tags, settings.mlflow_ui_url))),
    }
    for alias in ALIASES:
        version = model.aliases.get(alias)
        if version is None:
            found[alias] = None
            continue
        found[alias] = version_view(
            client, uc, client.get_model_version(uc.model_name, str(version)),
            settings.mlflow_ui_url, airflow_base, by_version.get(str(version), []),
        )
    return found


def version_view(
    client: MlflowClient,
    uc: UseCase,
    model_version: ModelVersion,
    mlflow_ui: str,
    airflow_base: str,
    aliases: list[str],
) -> dict[str, Any]:
    """A model version with its lineage, gate and approval tags, and the links to them.

    Versions appear as text, as in the tags: ``"none"`` for no version, ``""`` when unknown.
    """
    from esteira.registry.lineage import GateRecord, VersionRecord, version_text

    tags = dict(model_version.tags)
    record = VersionRecord.from_tags(tags)
    run_id = record.run_id or model_version.run_id or ""
    experiment_id = None
    if run_id:
        experiment_id = client.get_run(run_id).info.experiment_id
    gate = record.gate or GateRecord()
    dag_id, dag_run = record.airflow_dag_id or "", record.airflow_run_id or ""
    approval, promotion, rollback = record.approval, record.promotion, record.rollback
    window = record.training_window
    return {
        "version": int(model_version.version),
        "aliases": sorted(aliases),
        "created_at": _ms(model_version.creation_timestamp),
        "status": model_version.status,
        "run_id": run_id,
        "experiment_id": experiment_id,
        "feature_table_uri": record.feature_table_uri or "",
        "feature_table_version": _text(record.feature_version),
        "training_window": f"{window[0]:%Y-%m-%d} to {window[1]:%Y-%m-%d}" if window else "",
        "dataset_digest": record.dataset_digest or "",
        "airflow_dag_id": dag_id,
        "airflow_run_id": dag_run,
        "gate": {
            "verdict": gate.verdict,
            "mode": gate.mode,
            "passed": gate.passed,
            "compared_champion": version_text(gate.compared_champion) if record.gate else "",
            "reasons": list(gate.reasons),
            "metrics": gate.metrics,
            "key_metrics": {name: gate.metrics.get(name) for name in key_metrics(uc)},
            "comparison": comparison_rows(uc, gate),
        },
        "approval": {
            "decision": approval.decision,
            "by": approval.by,
            "reason": approval.reason,
            "at": approval.at,
        } if approval else None,
        "promotion": {
            "by": promotion.by,
            "reason": promotion.reason,
            "at": promotion.at,
            "previous_champion": version_text(promotion.previous_champion),
        } if promotion else None,
        "rollback": {
            "by": rollback.by,
            "reason": rollback.reason,
            "at": rollback.at,
            "from": version_text(rollback.from_version),
        } if rollback else None,
        "links": {
            "model": links.mlflow_model_url(mlflow_ui, uc.model_name, model_version.version),
            "run": links.mlflow_run_url(mlflow_ui, run_id, experiment_id) if run_id else None,
            "dag_run": links.airflow_run_url(airflow_base, dag_id, dag_run) if dag_id and dag_run else None,
        },
        "tags": tags,
    }


def comparison_rows(uc: UseCase, gate: GateRecord) -> list[dict[str, Any]]:
    """The gate's comparison of a version: its key metrics beside those of the champion it
    was judged against (same test set), with the rules that decided (the use case's current
    ones for a version registered before the rules were recorded)."""
    from esteira.evaluation.comparison import compare

    thresholds = list(gate.thresholds) or [rule.model_dump() for rule in uc.gate.thresholds]
    champion = gate.champion_metrics if gate.compared_champion is not None else None
    return [row.to_dict() for row in compare(gate.metrics, champion, thresholds, key_metrics(uc))]


def history_view(
    client: MlflowClient, uc: UseCase, model_tags: Mapping[str, str], mlflow_ui: str
) -> list[dict[str, Any]]:
    """The registered model's audit trail, oldest first: every alias move and decision, and
    for each registration and promotion the gate's comparison of that version
    (``comparison``, ``compared_champion``; the CLI, the demo and the page show it)."""
    from esteira.registry.lineage import GateRecord, VersionRecord, audit_trail, version_text

    records: dict[int, VersionRecord] = {}
    events = []
    for event in audit_trail(model_tags):
        view = {**event.to_dict(), "model_link": None, "comparison": [], "compared_champion": ""}
        version = event.version
        if version:
            view["model_link"] = links.mlflow_model_url(mlflow_ui, uc.model_name, version)
        if version and event.action in _COMPARED:
            if version not in records:
                tags = client.get_model_version(uc.model_name, str(version)).tags
                records[version] = VersionRecord.from_tags(tags)
            gate = records[version].gate or GateRecord()
            view["comparison"] = comparison_rows(uc, gate)
            view["compared_champion"] = version_text(gate.compared_champion) if records[version].gate else ""
        events.append(view)
    return events


def lineage_chain(
    champion: Mapping[str, Any], history: list[Mapping[str, Any]], serving: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The champion's path from data to production, one step per box on the page.

    ``history``: the registry events, newest first.
    """
    table = champion["feature_table_uri"]
    window = champion["training_window"]
    gate = champion["gate"]
    approval = champion["approval"]
    version = champion["version"]
    if approval:
        approval_step = {
            "title": "Approval",
            "value": f"{approval['decision']} by {approval['by']}",
            "detail": approval["reason"],
            "at": approval["at"],
        }
    else:
        promotion = champion["promotion"] or {}
        approval_step = {
            "title": "Approval",
            "value": "not required",
            "detail": promotion.get("reason") or "promoted without a human decision",
            "at": promotion.get("at", ""),
        }
    moves = [
        e for e in history
        if e.get("alias") == "champion" and str(e.get("version")) == str(version)
    ]
    deployment_lines = [f"{_PAST.get(e.get('action'), e.get('action'))} by {e.get('actor')}" for e in moves]
    if serving:
        live = serving.get("model_version")
        state = (
            "not reachable" if not serving["reachable"]
            else f"serving v{live}" if live else "no model loaded"
        )
        deployment_lines.append(f"online server {state}")
    return [
        {
            "title": "Feature table",
            "value": f"{table.rstrip('/').rsplit('/', 1)[-1] or table} @ Delta v{champion['feature_table_version']}",
            "detail": f"{table}" + (f" · window {window}" if window else ""),
            "at": "",
        },
        {
            "title": "Training run",
            "value": champion["run_id"][:12] or "unknown",
            "detail": (
                f"{champion['airflow_dag_id']} · {champion['airflow_run_id']}"
                if champion["airflow_dag_id"] else "not run by Airflow"
            ),
            "link": champion["links"]["run"],
            "link2": champion["links"]["dag_run"],
            "at": "",
        },
        {
            "title": "Model version",
            "value": f"v{version}",
            "detail": f"gate {gate['verdict'] or 'unknown'} ({gate['mode'] or '?'})"
            + (f" vs champion v{gate['compared_champion']}"
               if gate["compared_champion"] not in ("", "none") else ""),
            "link": champion["links"]["model"],
            "at": champion["created_at"],
        },
        approval_step,
        {
            "title": "Deployments",
            "value": "champion" if "champion" in champion["aliases"] else "not champion",
            "detail": "; ".join(deployment_lines) or "no promotion recorded",
            "at": moves[0].get("at", "") if moves else "",
        },
    ]


def _serving(uc: UseCase, settings: Settings) -> dict[str, Any] | None:
    """What the online server says it serves for the use case (``/models/<uc>/version``);
    None when there is none or it does not serve this use case (404)."""
    url = settings.model_server_url
    if not url.startswith(("http://", "https://")):
        return None
    request = urllib.request.Request(f"{url.rstrip('/')}/models/{uc.name}/version")
    if settings.model_server_api_key:
        request.add_header("X-API-Key", settings.model_server_api_key)
    try:
        with urllib.request.urlopen(request, timeout=1.0) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        if refused.code == 404:
            return None
        return {"url": url, "reachable": False, "model_name": uc.model_name, "model_version": None}
    except (urllib.error.URLError, OSError, ValueError):
        return {"url": url, "reachable": False, "model_name": uc.model_name, "model_version": None}
    if body.get("model_name") != uc.model_name:
        return None
    return {"url": url, "reachable": True, "model_name": uc.model_name,
            "model_version": body.get("model_version")}


def monitoring_view(
    uc: UseCase, settings: Settings, report_base: str | None, client: MlflowClient | None
) -> dict[str, Any]:
    """The latest windows (newest first), the drift-share and quality series for the chart
    (oldest first; quality estimated and realized) and the newest Evidently report.
    ``client`` None: MLflow is down, links only."""
    from esteira.monitoring.results import read_history

    threshold = uc.monitoring.drift_share_threshold
    history = read_history(settings, uc)
    if history.empty:
        return {"available": False, "message": "No monitoring window recorded yet",
                "windows": [], "series": [], "threshold": threshold, "latest_report": None}
    rows = [_window_row(row) for row in history.to_dict("records")]
    threshold = rows[-1]["drift_share_threshold"] or threshold
    series = [
        {"window_end": r["window_end"], "model_version": r["model_version"],
         "drift_share": r["drift_share"], "breach": r["breach"],
         "quality_metric": r["quality_metric"] or r["estimated_quality_metric"],
         "estimated_quality": r["estimated_quality_value"], "realized_quality": r["quality_value"],
         "quality_floor": None if r["quality_test_value"] is None
         else r["quality_test_value"] - uc.monitoring.quality_max_drop}
        for r in rows[-CHART_WINDOWS:] if r["drift_share"] is not None
    ]
    reported = [r for r in rows if r["report_run_id"]]
    return {
        "available": True,
        "message": "",
        "windows": list(reversed(rows[-MONITORING_WINDOWS:])),
        "series": series,
        "threshold": threshold,
        "latest_report": _report_links(reported[-1], settings, report_base, client) if reported else None,
    }


def _report_links(
    row: Mapping[str, Any], settings: Settings, report_base: str | None, client: MlflowClient | None
) -> dict[str, Any]:
    run_id = row["report_run_id"]
    experiment_id = None
    if client is not None:
        try:
            experiment_id = client.get_run(run_id).info.experiment_id
        except Exception:  # noqa: BLE001 - a missing run still leaves the direct run link
            experiment_id = None
    mlflow_link = (
        links.mlflow_artifact_url(settings.mlflow_ui_url, experiment_id, run_id, REPORT_FILE)
        if experiment_id else links.mlflow_run_url(settings.mlflow_ui_url, run_id)
    )
    return {
        "run_id": run_id,
        "window_start": row["window_start"],
        "window_end": row["window_end"],
        "model_version": row["model_version"],
        "artifact_uri": row["report_uri"],
        "mlflow": mlflow_link,
        "html": f"{report_base.rstrip('/')}/{run_id}" if report_base else None,
    }


def report_html(uc: UseCase, settings: Settings, run_id: str) -> str:
    """The drift report of one monitoring run of this use case, as HTML.

    Raises LookupError when the run is not a monitoring run of the use case's model.
    """
    import tempfile
    from pathlib import Path

    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise LookupError(f"no MLflow run {run_id}") from exc
    if run.data.tags.get("esteira.model_name") != uc.model_name:
        raise LookupError(f"run {run_id} is not a monitoring run of model '{uc.model_name}'")
    with tempfile.TemporaryDirectory() as folder:
        path = download_artifacts(
            run_id=run_id, artifact_path=REPORT_FILE, dst_path=folder,
            tracking_uri=settings.tracking_uri,
        )
        return Path(path).read_text(encoding="utf-8")


def _window_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "window_start": _iso(row.get("window_start")),
        "window_end": _iso(row.get("window_end")),
        "model_version": _plain(row.get("model_version")),
        "drift_share": _number(row.get("drift_share")),
        "drift_share_threshold": _number(row.get("drift_share_threshold")),
        "drifted_columns": _json(row.get("drifted_columns"), []),
        "quality_metric": _plain(row.get("quality_metric")),
        "quality_value": _number(row.get("quality_value")),
        "quality_drop": _number(row.get("quality_drop")),
        "quality_test_value": _number(row.get("quality_test_value")),
        "estimated_quality_metric": _plain(row.get("estimated_quality_metric")),
        "estimated_quality_value": _number(row.get("estimated_quality_value")),
        "estimated_quality_drop": _number(row.get("estimated_quality_drop")),
        "current_rows": _plain(row.get("current_rows")),
        "breach": bool(_plain(row.get("breach"))),
        "retrain": bool(_plain(row.get("retrain"))),
        "retrain_reason": _plain(row.get("retrain_reason")) or "",
        "report_run_id": _plain(row.get("report_run_id")) or "",
        "report_uri": _plain(row.get("report_uri")) or "",
    }


def _plain(value: Any) -> Any:
    """numpy and pandas scalars as Python values; missing values as None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _number(value: Any) -> float | None:
    value = _plain(value)
    return None if value is None else float(value)


def _iso(value: pd.Timestamp | dt.datetime | None) -> str:
    if value is None or value != value:  # NaT is not equal to itself
        return ""
    return value.isoformat(timespec="minutes")


def _json(raw: Any, default: T) -> T:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return default


def _ms(millis: int | None) -> str:
    if not millis:
        return ""
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC).isoformat(timespec="seconds")


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
