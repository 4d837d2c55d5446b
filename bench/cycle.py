"""Benchmark: one full cycle through the Airflow scheduler against the floor, the same library
calls made one after another in a single Python process.

The cycle: feature refresh of the history -> training (every candidate) and the gate ->
registration -> promotion -> batch inference -> one monitoring window. Both sides use the
same smaller churn use case, each with its own ESTEIRA_HOME and MLflow tracking server, whose
start-up is not timed; the scheduler side drives the embedded stack through the REST API
exactly as `make demo` does. The ratio is the orchestration overhead (scheduling, process
start per task, XCom, Asset events). The last line printed is one JSON object.

    .venv/bin/python bench/cycle.py [--entities 600]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HISTORY = {"interval_start": "2025-12-01", "interval_end": "2026-03-01"}
SCORED = {"interval_start": "2026-02-01", "interval_end": "2026-03-01"}
WINDOW = {"interval_start": "2026-02-27", "interval_end": "2026-02-28"}


def _usecase_dir(entities: int) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="esteira-bench-usecases-"))
    data = yaml.safe_load((REPO / "include/usecases/churn.yaml").read_text())
    data["source"]["generator"]["entities"] = entities
    data["registry"]["require_approval"] = False  # no person in a benchmark
    (folder / "churn.yaml").write_text(yaml.safe_dump(data))
    return folder


def _environment(usecases: Path) -> dict[str, str]:
    from esteira.stack.process import free_port

    return {
        "ESTEIRA_HOME": tempfile.mkdtemp(prefix="esteira-bench-"),
        "ESTEIRA_USECASES_DIR": str(usecases),
        "ESTEIRA_AIRFLOW_PORT": str(free_port()),
        "ESTEIRA_MLFLOW_PORT": str(free_port()),
        "ESTEIRA_MODEL_SERVER_PORT": str(free_port()),
        "ESTEIRA_SERVE_USECASE": "",
        "ESTEIRA_MODEL_SERVER_URL": "off",
        "MLFLOW_TRACKING_URI": "",
    }


def floor(env: dict[str, str]) -> float:
    """The cycle's library calls in this process, timed after the MLflow server is up."""
    os.environ.update(env)
    from esteira.config import get_settings, get_usecase
    from esteira.features.generator import generate_landing
    from esteira.features.refresh import refresh_features
    from esteira.monitoring.steps import monitor_interval
    from esteira.registry.steps import challenger_to_promote, promote_after_decision
    from esteira.serving.steps import score_interval
    from esteira.stack import process
    from esteira.stack.mlflow_server import mlflow_service
    from esteira.training.candidates import expand_candidates
    from esteira.training.fit import select_best
    from esteira.training.steps import finish_training, prepare_training, run_candidate, run_gate

    settings = get_settings()
    service = mlflow_service(settings.mlflow_port, f"sqlite:///{settings.home}/mlflow.db",
                             settings.home / "artifacts")
    pid = process.start(service, settings.home / "mlflow.log")
    try:
        process.wait_healthy(service, pid, 120)
        os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
        uc = get_usecase("churn", settings)
        generate_landing(uc, settings.landing_dir / uc.source.landing)
        started = time.perf_counter()
        refresh_features(uc, settings, dt.date(2025, 12, 1), dt.date(2026, 3, 1), run_id="bench")
        airflow = {"dag_id": "bench", "run_id": "bench", "try_number": 1}
        params = {"gate_mode": uc.gate.mode}
        training = prepare_training(uc, params, airflow, {"end": "2026-03-01"})
        results = [run_candidate(uc, params, c, training, airflow) for c in expand_candidates(uc)]
        best = select_best(results, uc.training.primary_metric, uc.training.greater_is_better).to_dict()
        gate = run_gate(uc, params, best, training)
        challenger = finish_training(uc, best, gate, training)
        candidate = challenger_to_promote(uc, {}, challenger)
        promote_after_decision(uc, candidate, None, _Run("bench"))
        score_interval(uc, SCORED, {}, "bench")
        monitor_interval(uc, WINDOW, {}, "bench")
        return time.perf_counter() - started
    finally:
        process.stop_group(pid)


class _Run:
    def __init__(self, run_id: str):
        self.run_id = run_id


def through_scheduler(env: dict[str, str]) -> float:
    """The same cycle as DAG runs on the embedded stack, timed after `esteira up`."""
    full = {**os.environ, **env}
    subprocess.run([sys.executable, "-m", "esteira", "up"], env=full, check=True,
                   stdout=subprocess.DEVNULL)
    try:
        os.environ.update(env)
        from esteira.config import get_settings, get_usecase
        from esteira.demo import Belt
        from esteira.features.generator import generate_landing
        from esteira.stack.airflow_api import AirflowClient

        settings = get_settings()
        uc = get_usecase("churn", settings)
        generate_landing(uc, settings.landing_dir / uc.source.landing)
        belt = Belt(AirflowClient.for_settings(settings), "churn")
        stages = ("feature_refresh", "model_training", "model_promotion", "batch_inference",
                  "drift_monitoring")
        for stage in stages:
            belt.client.wait_for_dag(belt.dag(stage))
            belt.client.unpause(belt.dag(stage))
        seen = {s: belt.known_runs(s) for s in stages}
        started = time.perf_counter()
        belt.run("feature_refresh", HISTORY)
        belt.follow("model_training", seen["model_training"])
        belt.follow("model_promotion", seen["model_promotion"])
        belt.run("batch_inference", SCORED)
        belt.run("drift_monitoring", WINDOW)
        return time.perf_counter() - started
    finally:
        subprocess.run([sys.executable, "-m", "esteira", "down"], env=full, check=False,
                       stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=600)
    parser.add_argument("--side", choices=["floor", "scheduler"], help=argparse.SUPPRESS)
    parser.add_argument("--env", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one side, in its own process, so neither warms the other's imports
        run = floor if args.side == "floor" else through_scheduler
        print(json.dumps({"seconds": run(json.loads(args.env))}))
        return
    usecases = _usecase_dir(args.entities)
    seconds = {}
    for side in ("floor", "scheduler"):
        env = _environment(usecases)
        out = subprocess.run(
            [sys.executable, __file__, "--side", side, "--env", json.dumps(env)],
            check=True, capture_output=True, text=True,
        )
        seconds[side] = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        print(f"{side:>9}: {seconds[side]:7.1f} s", flush=True)
    ratio = seconds["scheduler"] / seconds["floor"]
    print(f"orchestration overhead: the scheduler took {ratio:.2f}x the floor "
          f"(+{seconds['scheduler'] - seconds['floor']:.1f} s), load average {os.getloadavg()[0]:.1f}")
    print(json.dumps({
        "entities": args.entities,
        "floor_seconds": round(seconds["floor"], 1),
        "scheduler_seconds": round(seconds["scheduler"], 1),
        "overhead_ratio": round(ratio, 2),
        "overhead_seconds": round(seconds["scheduler"] - seconds["floor"], 1),
        "load_average": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()
