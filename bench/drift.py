"""Benchmark: the drift-monitoring DAG's own step (`stages.drift_monitoring.monitor`) on a
registered champion, against Evidently's DataDriftPreset run directly on the full frames.

The bench starts its own MLflow server, writes a churn-like feature table and labels once
(the training data: ``--training-rows`` rows over 30 days), trains, gates, registers (which
stores the monitoring reference) and promotes a champion with the training stage's own
functions, then writes one-day windows of ``--rows`` rows: no shift, a strong shift, a shift
close to the drift thresholds, and a window of ``--big-rows`` rows. Each measured run is its
own process, so its peak memory (VmHWM) is its own; each scenario runs ``--repeats`` times,
the two sides alternating, and the median run of each side is reported.

- Esteira: `monitor(uc, window, run_id)`, exactly what the DAG task calls: stream and
  sample the window, read the stored reference, load the champion, estimate its quality,
  Evidently on the samples, the HTML report on MLflow, the row in the monitoring table.
- Evidently full frame: the champion's whole training set (rebuilt at its lineage's Delta
  versions, as the step did before) and the whole window read into pandas, then
  ``Report([DataDriftPreset])`` and the HTML file. Not run on the big window unless
  ``--evidently-big``: its frames alone would take several GiB.

Both sides import the same libraries before the clock starts: ``speedup`` compares step
times, ``speedup_wall`` whole processes (interpreter start and imports included). Both use
the use case's declared per-column methods and thresholds. The last line printed is one
JSON object.

    .venv/bin/python bench/drift.py [--rows 1000000] [--big-rows 10000000] [--repeats 3]

Sample size and test sensitivity
--------------------------------
A p-value test (K-S, chi-squared, Z) answers "are these two samples from exactly the same
distribution?". Its power grows with the number of rows: on a million rows K-S rejects at
p < 0.05 a shift of a fiftieth of a standard deviation, which no model notices, so every
window "drifts" and the alert means nothing. A fixed sample size (``monitoring.sample_size``,
50,000 by default) keeps the power of a p-value test the same in every window, so one
threshold keeps one meaning. Distance-based methods (normed Wasserstein for numbers,
Jensen-Shannon for categories, Evidently's defaults above 1,000 reference rows) measure how
far the distributions are: their value converges to the distance between the populations
and hardly moves with the sample size once it is in the thousands, so a sample gives the
full-frame verdict at a fraction of the time and memory. That is what ``same_verdicts``
checks, including a shift whose distances sit just above the thresholds (0.12 against 0.1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
_USECASE = _REPO / "include" / "usecases" / "churn.yaml"
_MODEL = "churn_bench_drift"
_TRAINING_START = dt.date(2026, 1, 1)
_TRAINING_DAYS = 30
_FIRST_WINDOW = _TRAINING_START + dt.timedelta(days=_TRAINING_DAYS)
_CHUNK_ROWS = 1_000_000
# scenario -> (day offset after the training window, rows option, shift)
_SCENARIOS = {
    "no_shift": (0, "rows", "none"),
    "shifted": (1, "rows", "strong"),
    "near_threshold": (2, "rows", "near"),
    "big_shifted": (3, "big_rows", "strong"),
}
_NAMES = {"esteira": "esteira", "evidently": "evidently_full"}
_GOAL_SPEEDUP = 5.0
_GOAL_SPEEDUP_WALL = 3.0
_GOAL_RSS_MIB = 512.0


def _usecase(sample_size: int):
    """The demo use case: its own model name, logistic regression only, a 30-day training
    window; ``sample_size`` 0 keeps the declared sample size."""
    from esteira.config import load_usecase
    from esteira.usecase import CandidateSpec, RegistrySpec

    uc = load_usecase(_USECASE)
    training = uc.training.model_copy(
        update={"window_days": _TRAINING_DAYS,
                "candidates": [CandidateSpec(family="logistic_regression", params={"C": [1.0]})]}
    )
    monitoring = uc.monitoring.model_copy(update={"sample_size": sample_size or uc.monitoring.sample_size})
    return uc.model_copy(
        update={"training": training, "monitoring": monitoring, "registry": RegistrySpec(model_name=_MODEL)}
    )


def _peak_mib() -> float:
    """This process's own high-water mark (ru_maxrss would carry the parent's across exec)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return round(int(line.split()[1]) / 1024, 1)


def _frame(rows: int, seed: int, shift: str):
    """Churn-like feature rows; a strong shift moves three columns as the demo generator's
    drift switch does, a near one moves two columns to a normed Wasserstein distance of
    about 0.12 (thresholds 0.1), the drift share staying under its threshold."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "plan": rng.choice(["basic", "standard", "premium"], rows, p=[0.5, 0.3, 0.2]),
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "device": rng.choice(
                np.array(["mobile", "desktop", "tv", None], dtype=object), rows, p=[0.5, 0.3, 0.15, 0.05]
            ),
            "monthly_charges": rng.gamma(4.0, 15.0, rows),
            "session_minutes": np.where(rng.random(rows) < 0.03, np.nan, rng.exponential(30.0, rows)),
            "minutes_7d_mean": rng.normal(30.0, 8.0, rows),
            "tickets_30d_sum": rng.poisson(1.2, rows).astype(float),
            "payment_delay_30d_max": rng.poisson(3.0, rows).astype(float),
            "events_7d_count": rng.poisson(4.0, rows).astype(float) + 1,
        }
    )
    if shift == "strong":
        frame["monthly_charges"] *= 1.6
        frame["session_minutes"] *= 0.5
        frame.loc[rng.random(rows) < 0.5, "device"] = "tv"
    elif shift == "near":
        frame["monthly_charges"] *= 1.06
        frame["session_minutes"] *= 0.88
    return frame


def _day_rows(day: dt.date, rows: int, seed: int, shift: str):
    """One day of feature rows (one entity per row) and their labels, which follow a fixed
    logistic P(churned | features)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed + 1)
    frame = _frame(rows, seed, shift)
    stamps = pd.Timestamp(day) + pd.to_timedelta(np.sort(rng.integers(0, 86_400, rows)), unit="s")
    keys = pd.DataFrame({"customer_id": seed * 100_000_000 + np.arange(rows), "event_ts": stamps.astype("datetime64[us]")})
    logit = (1.6 * (frame["monthly_charges"] - 60) / 30 + 0.9 * (frame["tickets_30d_sum"] - 1.2)
             + 0.8 * (frame["plan"] == "basic") - 1.3).to_numpy()
    labels = keys.assign(churned=(rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64"))
    return pd.concat([keys, frame], axis=1), labels


def _append(uc, settings, kind: str, frame) -> None:
    from esteira import tables
    from esteira.features.refresh import feature_schema, labels_schema

    schema = feature_schema(uc) if kind == tables.FEATURES else labels_schema(uc)
    info = tables.TableInfo(name=tables.table_name(uc, kind), description=f"bench {kind}",
                            keys=["customer_id", "event_ts"])
    tables.append(tables.table_uri(settings, uc, kind), frame, info, schema)


def _setup(args: argparse.Namespace) -> dict:
    """Training data, a champion through the training stage's functions, then the windows."""
    from esteira import tables
    from esteira.config import get_settings
    from esteira.registry import transitions
    from esteira.stages import model_training as stage
    from esteira.training.candidates import expand_candidates

    uc, settings = _usecase(args.sample_size), get_settings()
    started = time.perf_counter()
    per_day = args.training_rows // _TRAINING_DAYS
    for offset in range(_TRAINING_DAYS):
        features, labels = _day_rows(_TRAINING_START + dt.timedelta(days=offset), per_day, 10 + offset, "none")
        _append(uc, settings, tables.FEATURES, features)
        _append(uc, settings, tables.LABELS, labels)
    options = stage.TrainingOptions(training_end=dt.datetime.combine(_FIRST_WINDOW, dt.time()))
    airflow = {"dag_id": uc.dag_id("model_training"), "run_id": "bench", "try_number": 1}
    training = stage.prepare_training(uc, options, stage.TrainingTrigger(), airflow)
    results = [stage.run_candidate(uc, options, c, training, airflow) for c in expand_candidates(uc)]
    best = stage.select_best(uc, results)
    gate = stage.run_gate(uc, options, best, training)
    version = int(stage.register_challenger(uc, best, gate, training)["version"])
    transitions.promote(uc, version, None, "bench", "the champion the bench monitors")
    trained = time.perf_counter() - started
    for offset, size_option, shift in _SCENARIOS.values():
        day, rows = _FIRST_WINDOW + dt.timedelta(days=offset), getattr(args, size_option)
        for chunk, start in enumerate(range(0, rows, _CHUNK_ROWS)):
            features, _ = _day_rows(day, min(_CHUNK_ROWS, rows - start), 1000 + 100 * offset + chunk, shift)
            _append(uc, settings, tables.FEATURES, features)
    return {"champion_version": version, "training_rows": training["rows"], "sample_size": uc.monitoring.sample_size,
            "feature_columns": len(uc.feature_names), "train_s": round(trained, 1),
            "setup_s": round(time.perf_counter() - started, 1)}


def _window(offset: int):
    from esteira.stages.window import RunWindow

    day = _FIRST_WINDOW + dt.timedelta(days=offset)
    return RunWindow(day, day + dt.timedelta(days=1))


def _import_both_sides() -> None:
    """What either side needs, imported before the clock starts."""
    import deltalake  # noqa: F401
    import evidently.presets  # noqa: F401
    import mlflow.sklearn  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from evidently import Report  # noqa: F401

    import esteira.features.training_set  # noqa: F401
    import esteira.monitoring.monitor  # noqa: F401
    import esteira.stages.drift_monitoring  # noqa: F401


def _run_esteira(args: argparse.Namespace) -> dict:
    from esteira.stages.drift_monitoring import monitor

    uc = _usecase(args.sample_size)
    outcome = monitor(uc, _window(args.offset), f"bench-{args.scenario}")
    return {
        "drifted_columns": sorted(outcome["drifted_columns"]),
        "dataset_drift": outcome["dataset_drift"],
        "drift_share": outcome["drift_share"],
        "current_rows": outcome["current_rows"],
        "current_sampled": outcome["current_sampled"],
        "estimated_roc_auc": outcome["estimated_quality"],
    }


def _run_evidently(args: argparse.Namespace) -> dict:
    from evidently import DataDefinition, Dataset, Report

    from esteira import tables
    from esteira.config import get_settings
    from esteira.features.training_set import build_training_set
    from esteira.monitoring.drift import drift_columns, drift_preset, drift_verdicts
    from esteira.registry.lineage import read_version
    from esteira.registry.transitions import get_alias_version

    uc, settings = _usecase(args.sample_size), get_settings()
    numeric, categorical = drift_columns(uc)
    record = read_version(uc, get_alias_version(uc, "champion"), settings)
    start, end = record.window()
    reference, _ = build_training_set(
        uc, settings, start, end, version=record.feature_version, labels_version=record.labels_version
    )
    reference = reference[numeric + categorical]
    window = _window(args.offset)
    current = tables.read_interval(
        tables.table_uri(settings, uc, tables.FEATURES), uc.timestamp, window.start_at, window.end_at,
        numeric + categorical,
    )
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([drift_preset(uc)], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    snapshot.save_html(str(Path(args.folder) / f"evidently_{args.scenario}.html"))
    scores, share, dataset_drift = drift_verdicts(snapshot)
    return {
        "drifted_columns": sorted(c for c, s in scores.items() if s.drifted),
        "dataset_drift": dataset_drift,
        "drift_share": share,
        "reference_rows": len(reference),
        "current_rows": len(current),
    }


def _side(args: argparse.Namespace) -> dict:
    _import_both_sides()
    started = time.perf_counter()
    result = (_run_esteira if args.side == "esteira" else _run_evidently)(args)
    return result | {"step_s": round(time.perf_counter() - started, 2), "peak_rss_mib": _peak_mib()}


def _child(argv: list[str], env: dict[str, str]) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env, cwd=_REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), round(wall, 2)


def _median_of(runs: list[dict]) -> dict:
    """The run with the median step time, and the medians of the times and peaks."""
    ordered = sorted(runs, key=lambda run: run["step_s"])
    middle = ordered[len(ordered) // 2]
    return middle | {key: statistics.median(run[key] for run in runs) for key in ("step_s", "wall_s", "peak_rss_mib")} | {
        "runs": len(runs), "verdicts_agree": all(r["drifted_columns"] == middle["drifted_columns"] for r in runs)}


def _measure(scenario: str, sides: list[str], args: argparse.Namespace, folder: str, env: dict[str, str]) -> dict:
    """Each side ``args.repeats`` times, alternating, so a busy machine slows both alike;
    the median run of each side."""
    offset = _SCENARIOS[scenario][0]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(args.repeats):
        for side in sides:
            result, wall = _child(
                ["--side", side, "--scenario", scenario, "--offset", str(offset), "--folder", folder,
                 "--sample-size", str(args.sample_size)],
                env,
            )
            runs[side].append(result | {"wall_s": wall})
    summary = {_NAMES[side]: _median_of(side_runs) for side, side_runs in runs.items()}
    for name, result in summary.items():
        print(f"{scenario} {name}: {json.dumps(result)}", flush=True)
    return summary


def _mlflow(folder: Path):
    """A tracking server of the bench's own, in its own process group."""
    from esteira.stack import process
    from esteira.stack.mlflow_server import mlflow_service

    port = process.free_port()
    store = folder / "mlflow"
    store.mkdir()
    service = mlflow_service(port, f"sqlite:///{store / 'mlflow.db'}", store / "artifacts")
    pid = process.start(service, store / "server.log")
    process.wait_healthy(service, pid, timeout=120, log_path=store / "server.log")
    return pid, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    """The parent only starts processes: it imports no data library, holds no frame."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--training-rows", type=int, default=1_000_000)
    parser.add_argument("--sample-size", type=int, default=0, help="default: the use case's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--evidently-big", action="store_true", help="also run Evidently on the big window's full frames")
    parser.add_argument("--side", choices=["setup", "esteira", "evidently"])
    parser.add_argument("--scenario")
    parser.add_argument("--offset", type=int)
    parser.add_argument("--folder")
    args = parser.parse_args(argv)
    if args.side:
        print(json.dumps(_setup(args) if args.side == "setup" else _side(args)))
        return 0

    from esteira.stack import process

    with tempfile.TemporaryDirectory(prefix="esteira-bench-drift-") as tmp:
        folder = Path(tmp)
        pid, tracking_uri = _mlflow(folder)
        env = os.environ | {"ESTEIRA_HOME": str(folder / "home"), "MLFLOW_TRACKING_URI": tracking_uri,
                            "ESTEIRA_MODEL_SERVER_URL": "off", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
        try:
            setup, seconds = _child(
                ["--side", "setup", "--rows", str(args.rows), "--big-rows", str(args.big_rows),
                 "--training-rows", str(args.training_rows), "--sample-size", str(args.sample_size)],
                env,
            )
            print(f"setup in {seconds:.0f}s: {json.dumps(setup)}", flush=True)
            scenarios = {}
            for name in _SCENARIOS:
                big = _SCENARIOS[name][1] == "big_rows"
                sides = ["esteira"] + (["evidently"] if not big or args.evidently_big else [])
                scenarios[name] = _measure(name, sides, args, tmp, env)
        finally:
            process.stop_group(pid)

    def baseline(name: str) -> dict:
        """Evidently's verdicts on the big window: its own run, else the 1M window of the same
        distributions (distance verdicts do not depend on the row count)."""
        return scenarios[name].get("evidently_full") or scenarios["shifted"]["evidently_full"]

    for name, sides in scenarios.items():
        sides["same_verdicts"] = all(
            sides["esteira"][key] == baseline(name)[key] for key in ("drifted_columns", "dataset_drift")
        ) and sides["esteira"]["verdicts_agree"]
    one_million = [name for name in scenarios if _SCENARIOS[name][1] == "rows"]

    def total(side: str, key: str) -> float:
        return sum(scenarios[name][side][key] for name in one_million)

    big = scenarios["big_shifted"]
    summary = {
        "rows": args.rows,
        "big_rows": args.big_rows,
        "repeats": args.repeats,
        **setup,
        "scenarios": scenarios,
        "esteira_step_s": round(total("esteira", "step_s") / len(one_million), 2),
        "evidently_full_step_s": round(total("evidently_full", "step_s") / len(one_million), 2),
        "esteira_wall_s": round(total("esteira", "wall_s") / len(one_million), 2),
        "evidently_full_wall_s": round(total("evidently_full", "wall_s") / len(one_million), 2),
        "esteira_peak_rss_mib": max(scenarios[name]["esteira"]["peak_rss_mib"] for name in one_million),
        "esteira_peak_rss_mib_10m": big["esteira"]["peak_rss_mib"],
        "esteira_step_s_10m": big["esteira"]["step_s"],
        "evidently_full_peak_rss_mib": max(scenarios[name]["evidently_full"]["peak_rss_mib"] for name in one_million),
        "evidently_full_10m": (
            "run" if "evidently_full" in big else "not run: its full frames take several GiB (see "
            "evidently_full_peak_rss_mib at 1M); --evidently-big runs it"
        ),
        "speedup": round(total("evidently_full", "step_s") / total("esteira", "step_s"), 2),
        "speedup_wall": round(total("evidently_full", "wall_s") / total("esteira", "wall_s"), 2),
        "same_verdicts": all(sides["same_verdicts"] for sides in scenarios.values()),
    }
    summary["goals_met"] = (
        summary["speedup"] >= _GOAL_SPEEDUP
        and summary["speedup_wall"] >= _GOAL_SPEEDUP_WALL
        and summary["esteira_peak_rss_mib"] < _GOAL_RSS_MIB
        and summary["esteira_peak_rss_mib_10m"] < _GOAL_RSS_MIB
        and summary["same_verdicts"]
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
