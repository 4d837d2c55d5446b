"""Onboarding a use case: ``esteira init`` writes its YAML from a data file or table,
``esteira check`` says what a first refresh would do, ``enable`` / ``approve`` / ``runs``
drive its DAGs through Airflow's REST API, as a person would.

``init`` infers from a sample: column types, nullability, allowed categories, ranges with
a margin, the grain of the timestamp and the problem type of the target; the YAML it
writes says with ``REVIEW`` what a person should look at before enabling it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from esteira.config import ConfigError, Settings, load_usecase
from esteira.usecase import UseCase

_SAMPLE_ROWS = 200_000
_MAX_CATEGORIES = 20
_MARGIN = 0.1
_EVERYTHING = (dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1))
_COOLDOWN_DAYS = {"event": 7, "day": 7, "week": 14, "month": 60, "year": 365}


class OnboardingError(RuntimeError):
    """A command cannot do what was asked; the message says what to fix."""


# ---------------------------------------------------------------- esteira init


def _source_spec(location: str) -> dict:
    path = Path(location)
    if (path / "_delta_log").is_dir() or location.startswith(("s3://", "abfss://", "gs://")):
        return {"kind": "delta", "path": str(path.resolve()) if path.exists() else location}
    return {"kind": "file", "path": str(path.resolve()) if path.exists() else location}


def read_sample(location: str, limit: int = _SAMPLE_ROWS) -> Any:
    """Up to ``limit`` rows of a CSV or Parquet file, folder or glob, or a Delta table, typed
    (CSV types as pandas infers them)."""
    import glob

    import pandas as pd
    import pyarrow.parquet as pq

    from esteira import tables

    spec = _source_spec(location)
    if spec["kind"] == "delta":
        batches, rows = [], 0
        for batch in tables.iter_batches(spec["path"]):
            batches.append(batch.to_pandas())
            rows += batch.num_rows
            if rows >= limit:
                break
        return pd.concat(batches, ignore_index=True).head(limit)
    path = Path(location)
    files = sorted(p for p in path.rglob("*") if p.suffix in (".csv", ".parquet")) if path.is_dir() \
        else sorted(Path(p) for p in glob.glob(location))
    if not files:
        raise OnboardingError(f"--from {location}: no such file, folder or Delta table")
    frames, rows = [], 0
    for file in files:
        if file.suffix == ".parquet":
            parquet = pq.ParquetFile(file)
            frame = next(parquet.iter_batches(batch_size=limit - rows, use_threads=False)).to_pandas()
        else:
            frame = pd.read_csv(file, nrows=limit - rows)
        frames.append(frame)
        rows += len(frame)
        if rows >= limit:
            break
    return pd.concat(frames, ignore_index=True)


def _column_rule(values: Any, nullable: bool) -> dict:
    """type, nullable, and min/max with a margin or the allowed categories."""
    import pandas as pd

    present = values.dropna()
    rule: dict[str, Any] = {"nullable": bool(nullable)}
    if pd.api.types.is_bool_dtype(values):
        return {"type": "bool", **rule}
    if pd.api.types.is_datetime64_any_dtype(values):
        return {"type": "timestamp", **rule}
    if not pd.api.types.is_numeric_dtype(values):
        numbers = pd.to_numeric(present, errors="coerce")
        if len(present) and numbers.notna().all():
            present = numbers
        else:
            categories = sorted(present.astype(str).unique())
            if len(categories) <= _MAX_CATEGORIES:
                return {"type": "category", **rule, "allowed": categories}
            return {"type": "string", **rule}
    kind = "int" if len(present) and (present % 1 == 0).all() else "float"
    if len(present):
        low, high = float(present.min()), float(present.max())
        span = (high - low) or abs(high) or 1.0
        rule["min"] = max(0.0, low - _MARGIN * span) if low >= 0 else low - _MARGIN * span
        rule["max"] = high + _MARGIN * span
        if kind == "int":
            rule["min"], rule["max"] = math.floor(rule["min"]), math.ceil(rule["max"])
        else:
            rule["min"], rule["max"] = round(rule["min"], 6), round(rule["max"], 6)
    return {"type": kind, **rule}


def infer_grain(values: Any) -> str:
    """``year`` for integer years or 'YYYY', ``month`` for 'YYYY-MM' or first-of-month
    dates, ``day`` for dates, else ``event``."""
    import pandas as pd

    from esteira.features.validation import parse_timestamps

    present = values.dropna()
    if pd.api.types.is_integer_dtype(present) or (present.astype(str).str.len() == 4).all():
        return "year"
    if (present.astype(str).str.len() == 7).all():
        return "month"
    stamps, _ = parse_timestamps(present, "event")
    stamps = stamps.dropna()
    if not len(stamps) or (stamps.dt.normalize() != stamps).any():
        return "event"
    if (stamps.dt.day == 1).all() and (stamps.dt.month == 1).all():
        return "year"
    return "month" if (stamps.dt.day == 1).all() else "day"


def _problem_type(target: Any, name: str) -> str:
    import pandas as pd

    present = target.dropna()
    if pd.api.types.is_bool_dtype(present) or set(pd.unique(present)) <= {0, 1}:
        return "binary_classification"
    if pd.api.types.is_numeric_dtype(present):
        return "regression"
    raise OnboardingError(
        f"--target {name}: neither 0/1 nor numeric ({present.astype(str).unique()[:3].tolist()}...); "
        "encode it as 0/1 for a binary classification"
    )


def _features(schema: dict, skip: set[str], target: str, grain: str) -> list[dict]:
    """Each column as it is, and for numbers strictly-past aggregates: the previous
    period's (or event's) value and the mean of the 3 periods (or 7 days) before."""
    back = "1 events" if grain == "event" else "1 periods"
    before = "7d" if grain == "event" else "3 periods"
    features = []
    for column, rule in schema.items():
        if column in skip:
            continue
        numeric = rule["type"] in ("int", "float", "bool")
        if column != target:
            features.append({"name": column, "function": "identity", "source": column,
                             "type": "float" if numeric else rule["type"]})
        if numeric and rule["type"] != "bool":
            features.append({"name": f"{column}_prev", "function": "lag", "source": column,
                             "window": back, "type": "float"})
            features.append({"name": f"{column}_mean_before", "function": "rolling_mean",
                             "source": column, "window": before, "closed": "left", "type": "float"})
    return features


def _span(stamps: Any, grain: str) -> str:
    """The whole sample as a training window, in the grain."""
    import numpy as np

    from esteira.features.definitions import period_ordinals

    values = stamps.dropna().to_numpy().astype("datetime64[us]")
    if grain == "event":
        return f"{max(1, int((values.max() - values.min()) / np.timedelta64(1, 'D')) + 1)}d"
    ordinals = period_ordinals(values, grain)
    return f"{int(ordinals.max() - ordinals.min()) + 1} periods"


def _dump(data: dict, flow: bool | None = None) -> str:
    """Block style at the top; ``flow=None`` writes innermost mappings on one line."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=flow, width=100, allow_unicode=True)


def infer_usecase(
    name: str, location: str, entity: str, timestamp: str, target: str, grain: str | None = None,
    sample: Any = None,
) -> str:
    """The YAML text of a new use case over ``location`` (a sample is read when not given)."""
    from esteira.features.validation import parse_timestamps

    frame = read_sample(location) if sample is None else sample
    missing = [c for c in (entity, timestamp, target) if c not in frame.columns]
    if missing:
        raise OnboardingError(
            f"--from {location}: no column {', '.join(missing)} (columns: {', '.join(frame.columns)})"
        )
    grain = grain or infer_grain(frame[timestamp])
    stamps, bad = parse_timestamps(frame[timestamp], grain)
    if bad.all():
        raise OnboardingError(f"--timestamp {timestamp}: no value parses at grain {grain}")
    schema = {c: _column_rule(frame[c], bool(frame[c].isna().any())) for c in frame.columns}
    schema[entity] = {**schema[entity], "nullable": False}
    schema[entity].pop("max", None)
    schema[timestamp] = {"type": "timestamp", "nullable": False}
    # No range on the target: an unusual value is a lesson, not a bad row.
    schema[target] = {"type": schema[target]["type"], "nullable": True}
    problem = _problem_type(frame[target], target)
    if problem == "binary_classification":
        schema[target] = {"type": "int", "nullable": True, "min": 0, "max": 1}
    regression = problem == "regression"
    metric = "rmse" if regression else "roc_auc"
    # A column unique on every row is an identifier: kept in the schema, not a feature.
    ids = [c for c in frame.columns if c not in (entity, timestamp, target)
           and schema[c]["type"] in ("int", "string") and frame[c].nunique() == len(frame) > 1]
    first = stamps.min()
    spec = {
        "name": name,
        "description": f"{target} of each {entity}, from {Path(location).name}",
        "owner": "",
        "problem_type": problem,
        "entity": entity,
        "timestamp": timestamp,
        "grain": grain,
        "start_date": first.date(),
    }
    sections = {
        "source": {"source": _source_spec(location)},
        "schema": {"schema": {"max_bad_share": 0.05, "columns": schema}},
        "features": {"features": {"table": f"{name}_features", "description": f"Features of {name}",
                                  "definitions": _features(schema, {entity, timestamp, *ids}, target, grain)}},
        "label": {"label": {"column": target, "delay": "0d" if grain == "event" else "0 periods"}},
        "training": {"training": {
            "primary_metric": metric, "greater_is_better": not regression,
            "window": _span(stamps, grain), "split": {"validation_fraction": 0.15, "test_fraction": 0.2},
            "candidates": [{"family": "ridge", "params": {"alpha": [1.0]}},
                           {"family": "hist_gradient_boosting_regressor", "params": {"max_iter": [100]}}]
            if regression else
            [{"family": "logistic_regression", "params": {"C": [1.0]}},
             {"family": "hist_gradient_boosting", "params": {"max_iter": [100]}}],
        }},
        "gate": {"gate": {"mode": "enabled", "thresholds": [
            {"metric": "rmse", "greater_is_better": False, "min_relative_change": -0.05},
            {"metric": "mae", "greater_is_better": False, "min_relative_change": -0.05},
        ] if regression else [
            {"metric": "roc_auc", "greater_is_better": True, "threshold": 0.6, "min_absolute_change": 0.0},
            {"metric": "log_loss", "greater_is_better": False, "min_relative_change": -0.05},
        ]}},
        "registry": {"registry": {"require_approval": True, "approval_timeout_hours": 24}},
        "online": {"online": {"stale": "refuse"}},
        "monitoring": {"monitoring": {"window_days": 1, "drift_share_threshold": 0.3}},
        "retraining": {"retraining": {"breaches": 2, "windows": 3, "cooldown_days": _COOLDOWN_DAYS[grain]}},
    }
    comments = {
        "source": "# Where the rows come from (kinds: landing_files, file, delta, sql).",
        "schema": "# REVIEW: inferred from a sample; ranges have a 10% margin, categories are the\n"
                  "# values seen. Rows breaking a rule go to the quarantine table with the reason.",
        "features": "# REVIEW: each column as it is, and for numbers the previous value and the mean\n"
                    "# before (closed: left is strictly before the row's own time, so no leak)."
                    + (f"\n# Not features (unique on every row, identifiers): {', '.join(ids)}." if ids else ""),
        "label": f"# REVIEW: '{target}' is a column of the same rows; delay is how long after a row\n"
                 "# its target is known (a window: '0 periods', '14d'). With a delay, a feature of\n"
                 f"# '{target}' must be a lag at least that long (`esteira check` names the others).",
        "training": f"# REVIEW: the candidates and the window (the whole sample: {_span(stamps, grain)}).",
        "gate": "# REVIEW: the first model needs only these absolute thresholds; later ones are\n"
                "# compared with the champion (negative change: a tolerance).",
        "registry": "# A person approves each promotion: esteira approve <name> --reason \"...\"",
        "online": f"# Each refresh stores every {entity}'s latest features, so the model server scores\n"
                  f"# {{\"{entity}\": <key>}} alone. REVIEW: max_age ('2 periods', '7d') refuses older rows\n"
                  "# (stale: flag scores and flags them), and leaves them out of training too.",
        "monitoring": "# Drift of each scoring window against the champion's training data.",
        "retraining": "# Retrain when drift breaches in `breaches` of the last `windows` windows.",
    }
    header = (
        f"# Written by `esteira init {name}` from {location} ({len(frame)} sampled rows,\n"
        f"# grain {grain}, {problem}). Review the lines marked REVIEW, then run\n"
        f"# `esteira check {name}` and `esteira enable {name}`.\n"
    )
    body = [_dump(spec, flow=False)] + [f"\n{comments[key]}\n{_dump(section)}" for key, section in sections.items()]
    return header + "".join(body)


def init_usecase(
    settings: Settings, name: str, location: str, entity: str, timestamp: str, target: str,
    grain: str | None = None, force: bool = False,
) -> Path:
    """Write ``<ESTEIRA_USECASES_DIR>/<name>.yaml``; refuses to overwrite without ``force``."""
    path = settings.usecases_dir / f"{name}.yaml"
    if path.exists() and not force:
        raise OnboardingError(f"{path} exists; pass --force to replace it")
    text = infer_usecase(name, location, entity, timestamp, target, grain)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_suffix(".yaml.draft")
    draft.write_text(text)
    try:
        load_usecase(draft)
    except ConfigError as error:
        raise OnboardingError(f"the inferred use case does not validate ({error}); see {draft}") from None
    draft.replace(path)
    return path


# ---------------------------------------------------------------- esteira check


@dataclass
class CheckReport:
    """What a first refresh would do; ``problems`` non-empty means it would fail."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)

    def problem(self, line: str) -> None:
        self.problems.append(line)
        self.lines.append(f"PROBLEM: {line}")


def _sample_interval(uc: UseCase) -> tuple[dt.datetime, dt.datetime]:
    if uc.source.kind == "landing_files":
        start = dt.datetime.combine(uc.start_date, dt.time())
        return start, start + dt.timedelta(days=7)
    return _EVERYTHING


def check_usecase(uc: UseCase, settings: Settings, sample_rows: int = _SAMPLE_ROWS) -> CheckReport:
    """Validate a sample of the source's rows and compute their features, writing nothing."""
    import pandas as pd

    from esteira.features import sources
    from esteira.features.definitions import (
        Batch,
        check_definitions,
        compute_features,
        history_columns,
        shift_back,
    )
    from esteira.features.validation import SchemaMismatch, validate
    from esteira.stages.model_training import MIN_TRAINING_ROWS

    report = CheckReport()
    try:
        check_definitions(uc)
    except ValueError as error:
        report.problem(str(error))
        return report
    columns = list(dict.fromkeys([*uc.schema_.columns, *([uc.label.column] if uc.labels_from_events else [])]))
    start, end = _sample_interval(uc)
    good, reasons, raw_rows = [], Counter(), 0
    try:
        source = sources.events_source(uc, settings)
        report.say(f"source: {source.name}" + (f" (Delta version {source.version()})" if source.version() is not None else ""))
        for chunk in source.read(start, end, columns):
            checked = validate(chunk.rows, uc, chunk.day)
            raw_rows += len(chunk.rows)
            reasons.update(_reason(r) for text in checked.bad["reason"] for r in text.split("; "))
            good.append(_with_label(uc, chunk.rows, checked))
            if sum(len(g) for g in good) >= sample_rows:
                break
    except (sources.SourceError, SchemaMismatch, FileNotFoundError) as error:
        report.problem(str(error))
        return report
    if not raw_rows:
        report.problem(f"{source.name}: no rows in [{start:%Y-%m-%d}, {end:%Y-%m-%d})")
        return report
    frame = pd.concat(good, ignore_index=True).sort_values(uc.timestamp, kind="stable").reset_index(drop=True)
    bad = raw_rows - len(frame)
    report.say(f"rows read: {raw_rows}; good: {len(frame)}; bad: {bad} ({bad / raw_rows:.1%}, "
               f"limit schema.max_bad_share {uc.schema_.max_bad_share:.0%})")
    for reason, count in reasons.most_common(10):
        report.say(f"  bad: {count} x {reason}")
    if bad / raw_rows > uc.schema_.max_bad_share:
        report.problem(f"{bad / raw_rows:.1%} bad rows, above schema.max_bad_share; the columns: "
                       + ", ".join(sorted({r.split(':')[0] for r in reasons})))
    if frame.empty:
        report.problem("no good rows: every row breaks the schema")
        return report
    per_period = frame.groupby(frame[uc.timestamp].dt.date).size()
    report.say(f"periods (grain {uc.grain}): {len(per_period)}, from {per_period.index[0]} to "
               f"{per_period.index[-1]}; rows per period: min {per_period.min()}, median "
               f"{int(per_period.median())}, max {per_period.max()}")
    history = frame[history_columns(uc)].iloc[:0]
    features = compute_features(Batch.build(history, frame, uc.entity, uc.timestamp, uc.grain), uc)
    for feature in uc.features.definitions:
        present = features[feature.name].notna().mean()
        report.say(f"  feature {feature.name} ({feature.function}{', ' + feature.window if feature.window else ''}): "
                   f"{present:.0%} present")
        if present == 0:
            report.problem(f"features.definitions '{feature.name}': no row has a value")
    window_end = _period_after(frame[uc.timestamp].max().to_pydatetime(), uc.grain)
    window_start = shift_back(window_end, uc.training.window or f"{uc.training.window_days}d", uc.grain)
    in_window = frame[(frame[uc.timestamp] >= window_start) & (frame[uc.timestamp] < window_end)]
    if uc.labels_from_events:
        # a refresh up to the window's end knows the labels of the rows label.delay before it
        known_until = shift_back(window_end, uc.label.delay_window, uc.grain)
        known = in_window[in_window[uc.timestamp] < known_until]
        labelled = int(known[uc.label.column].notna().sum())
    else:
        labelled = len(in_window)
    split = uc.training.split
    report.say(f"training window [{window_start:%Y-%m-%d}, {window_end:%Y-%m-%d}): {labelled} labelled rows; "
               f"about {int(labelled * (1 - split.validation_fraction - split.test_fraction))} train, "
               f"{int(labelled * split.validation_fraction)} validation, {int(labelled * split.test_fraction)} test")
    if labelled < MIN_TRAINING_ROWS:
        report.problem(f"training window holds {labelled} labelled rows (need {MIN_TRAINING_ROWS}): "
                       "widen training.window or add data")
    if uc.online is not None:
        report.say(_online_line(uc, frame))
    return report


def _online_line(uc: UseCase, frame: Any) -> str:
    """What the online store would hold after a refresh of the sample, and how many of its
    entities a request now would find stale (``online.max_age``)."""
    import pandas as pd

    from esteira.features.online import stale_rows

    latest = frame.groupby(uc.entity)[uc.timestamp].max()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    stale = int(stale_rows(uc, latest, pd.Series(now, index=latest.index)).sum()) if len(latest) else 0
    done = {"refuse": "refused", "flag": "flagged"}[uc.online.stale]
    rule = (f"max_age {uc.online.max_age}: {stale} stale now, {done} by the model server"
            if uc.online.max_age else "no max_age: never stale")
    return (f"online store: the latest row of each {uc.entity} ({len(latest)} in the sample), "
            f"newest {latest.max():%Y-%m-%d %H:%M}; {rule}")


def _reason(text: str) -> str:
    """A reason without the row's value, so equal problems count together."""
    return text.split(" ('")[0].split(" (allowed")[0]


def _with_label(uc: UseCase, raw: Any, checked: Any) -> Any:
    """The good rows, with the label column when it is an event column outside the schema."""
    import numpy as np

    if not uc.labels_from_events or uc.label.column in checked.good:
        return checked.good
    kept = np.setdiff1d(np.arange(len(raw)), checked.bad_index)
    return checked.good.assign(**{uc.label.column: raw[uc.label.column].iloc[kept].to_numpy()})


def _period_after(newest: dt.datetime, grain: str) -> dt.datetime:
    """The start of the period after the one ``newest`` is in (the next day at grain event)."""
    day = dt.datetime.combine(newest.date(), dt.time())
    if grain == "year":
        return day.replace(year=day.year + 1, month=1, day=1)
    if grain == "month":
        return day.replace(year=day.year + day.month // 12, month=day.month % 12 + 1, day=1)
    return day + dt.timedelta(days=7 if grain == "week" else 1)


# ---------------------------------------------------------------- enable, approve, runs

STAGES = ("feature_refresh", "model_training", "model_promotion", "model_rollback",
          "batch_inference", "drift_monitoring")


def enable(uc: UseCase, client: Any, echo: Callable[[str], None] = print) -> list[str]:
    """Unpause every DAG of the use case, so an Asset event never lands in a paused DAG."""
    dag_ids = [uc.dag_id(stage) for stage in STAGES]
    for dag_id in dag_ids:
        client.wait_for_dag(dag_id)
    for dag_id in dag_ids:
        client.unpause(dag_id)
        echo(f"enabled {dag_id}")
    return dag_ids


def approve(uc: UseCase, client: Any, reason: str, reject: bool = False, wait: float = 0) -> dict:
    """Answer the use case's pending promotion approval (the oldest, if several). With
    ``wait``, wait up to that many seconds for one to be asked, and then for its run to end."""
    import time

    if not reason.strip():
        raise OnboardingError("--reason is required: it is recorded with the decision")
    dag_id = uc.dag_id("model_promotion")
    deadline = time.monotonic() + wait
    while not (pending := [d for d in client.pending_approvals() if d["task_instance"]["dag_id"] == dag_id]):
        if time.monotonic() >= deadline:
            raise OnboardingError(f"no approval is waiting in {dag_id} (see: esteira runs {uc.name})")
        time.sleep(3)
    detail = sorted(pending, key=lambda d: d["created_at"])[0]
    ti = detail["task_instance"]
    option = "Reject" if reject else "Approve"
    client.answer_approval(dag_id, ti["dag_run_id"], ti["task_id"], option, reason, ti.get("map_index", -1))
    answer = {"dag_id": dag_id, "run_id": ti["dag_run_id"], "option": option,
              "subject": detail.get("subject", ""), "state": None}
    if wait:  # then also until the promotion has moved (or not) the champion
        answer["state"] = client.wait(dag_id, ti["dag_run_id"], timeout=max(wait, 300)).state
    return answer


def runs(uc: UseCase, client: Any, settings: Settings, limit: int = 5) -> list[dict]:
    """The latest runs of each DAG of the use case: state, when, and the UI link."""
    rows = []
    for stage in STAGES:
        dag_id = uc.dag_id(stage)
        for run in client.latest_runs(dag_id, limit=limit):
            rows.append({
                "dag_id": dag_id, "run_id": run["dag_run_id"], "state": run["state"],
                "start": run.get("start_date"), "end": run.get("end_date"),
                "link": f"{settings.airflow_url}/dags/{dag_id}/runs/{run['dag_run_id']}",
            })
    return rows
