"""Benchmark: one full cycle through the Airflow scheduler against its floor, the same stage
functions called in one Python process, the candidates trained in parallel as the DAG does.

The cycle is the first half of `make demo` on a smaller churn use case: feature refresh of
the history -> training (every candidate, at most CANDIDATE_SLOTS at a time) and the gate
-> registration -> promotion -> the batch inference the champion starts -> one monitoring
window. Each side runs ``--repeats`` times, alternating, each time on a new ESTEIRA_HOME
with its own MLflow server; the median is reported. Besides the stack as shipped, two
baselines run the same cycle (``SIDES``): the stock LocalExecutor (no warm start), and that
with Airflow's default scheduling settings, so the share of the overhead each removed is
measured in the same run. Start-up is not timed on either side:
the servers and `esteira up` (whose workers import the libraries), and the floor's imports
of the same libraries. The scheduler side is timed from its first trigger to the end date
Airflow records for the last run, so the bench's polling adds nothing. The ratio is the
orchestration overhead: scheduling, task processes, XCom, Asset events.

Then, unless ``--no-demo``: `make demo`'s wall time on the full use case (`esteira up` and
`esteira demo` on a new home; setup excluded) and the Esteira page's first load after it.
Ports: ESTEIRA_AIRFLOW_PORT, ESTEIRA_MLFLOW_PORT, ESTEIRA_MODEL_SERVER_PORT when set, else
free ones. The last line printed is one JSON object.

    .venv/bin/python bench/cycle.py [--entities 600] [--repeats 3] [--no-demo] [--no-baselines]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HISTORY = {"interval_start": "2025-12-01", "interval_end": "2026-03-01"}
WINDOW = {"interval_start": "2026-02-27", "interval_end": "2026-02-28"}
CANDIDATE_SLOTS = 2  # train_candidate's max_active_tis_per_dagrun in dags/model_training.py
STAGES = ("feature_refresh", "model_training", "model_promotion", "batch_inference", "drift_monitoring")
_POLL = 0.5


def _usecase_dir(entities: int) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="esteira-bench-usecases-"))
    data = yaml.safe_load((REPO / "include/usecases/churn.yaml").read_text())
    data["source"]["generator"]["entities"] = entities
    data["registry"]["require_approval"] = False  # no person in a benchmark
    (folder / "churn.yaml").write_text(yaml.safe_dump(data))
    return folder


def _environment(usecases: Path | None, serve: bool = False) -> dict[str, str]:
    from esteira.stack.process import free_port

    def port(name: str) -> str:
        return os.environ.get(name) or str(free_port())

    env = {
        "ESTEIRA_HOME": tempfile.mkdtemp(prefix="esteira-bench-"),
        "ESTEIRA_AIRFLOW_PORT": port("ESTEIRA_AIRFLOW_PORT"),
        "ESTEIRA_MLFLOW_PORT": port("ESTEIRA_MLFLOW_PORT"),
        "ESTEIRA_MODEL_SERVER_PORT": port("ESTEIRA_MODEL_SERVER_PORT"),
        "MLFLOW_TRACKING_URI": "",
    }
    if usecases is not None:
        env["ESTEIRA_USECASES_DIR"] = str(usecases)
    if not serve:
        env |= {"ESTEIRA_SERVE_USECASE": "", "ESTEIRA_MODEL_SERVER_URL": "off"}
    return env


def _window(params: dict):
    from esteira.stages.window import RunWindow

    return RunWindow(dt.date.fromisoformat(params["interval_start"]), dt.date.fromisoformat(params["interval_end"]))


def _forked(_: int) -> None:
    """Nothing: submitted once per slot so the pool forks its workers before any MLflow call."""


def _train(uc, options, candidate: dict, training: dict, airflow: dict) -> dict:
    from esteira.stages import model_training

    return model_training.run_candidate(uc, options, candidate, training, airflow)


def floor(env: dict[str, str]) -> float:
    """The cycle's stage functions in this process (the candidates in a pool of forked
    processes, like warm task processes), timed after the MLflow server is up."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    os.environ.update(env)
    from esteira.config import get_settings, get_usecase
    from esteira.features.generator import generate_landing
    from esteira.orchestration.warm import import_task_libraries
    from esteira.stack import process
    from esteira.stack.mlflow_server import mlflow_service
    from esteira.stages import (
        batch_inference,
        drift_monitoring,
        feature_refresh,
        model_promotion,
        model_training,
    )
    from esteira.training.candidates import expand_candidates

    settings = get_settings()
    service = mlflow_service(settings.mlflow_port, f"sqlite:///{settings.home}/mlflow.db",
                             settings.home / "artifacts")
    pid = process.start(service, settings.home / "mlflow.log")
    try:
        process.wait_healthy(service, pid, 120)
        os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
        uc = get_usecase("churn", settings)
        generate_landing(uc, settings.landing_dir / uc.source.landing)
        import_task_libraries()
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(CANDIDATE_SLOTS, mp_context=fork) as pool:
            list(pool.map(_forked, range(CANDIDATE_SLOTS)))
            started = time.perf_counter()
            feature_refresh.publish(uc, feature_refresh.refresh(uc, _window(HISTORY), "bench"))
            airflow = {"dag_id": "bench", "run_id": "bench", "try_number": 1}
            options = model_training.TrainingOptions(gate_mode=uc.gate.mode)
            trigger = model_training.TrainingTrigger("features", dt.datetime(2026, 3, 1))
            training = model_training.prepare_training(uc, options, trigger, airflow)
            jobs = [pool.submit(_train, uc, options, c, training, airflow) for c in expand_candidates(uc)]
            best = model_training.select_best(uc, [job.result() for job in jobs])
        gate = model_training.run_gate(uc, options, best, training)
        challenger = model_training.register_challenger(uc, best, gate, training)
        candidate = model_promotion.challenger_to_promote(uc, None, challenger["version"])
        decision = model_promotion.record_decision(uc, candidate, None, uc.registry.approval_timeout_hours)
        approved = model_promotion.Approval.recorded(decision)
        model_promotion.deploy(uc, model_promotion.promote(uc, candidate, approved, "bench"))
        batch_inference.score(uc, None, "bench")
        drift_monitoring.retraining_request(drift_monitoring.monitor(uc, _window(WINDOW), "bench"))
        return time.perf_counter() - started
    finally:
        process.stop_group(pid)


def _esteira(command: str, env: dict[str, str], check: bool = True) -> float:
    """Run ``esteira <command>`` with ``env``; its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "esteira", command], env={**os.environ, **env}, check=check,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _next_run(client, dag_id: str, seen: set[str], timeout: float = 600) -> str:
    """The id of the first run of ``dag_id`` not in ``seen`` (one an Asset event started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in client.latest_runs(dag_id) if r["dag_run_id"] not in seen]
        if runs:
            return runs[0]["dag_run_id"]
        time.sleep(_POLL)
    raise RuntimeError(f"no run of {dag_id} started within {timeout:.0f} s")


def _finish(client, dag_id: str, run_id: str) -> None:
    outcome = client.wait(dag_id, run_id, timeout=1800, poll=_POLL)
    if not outcome.ok:
        raise RuntimeError(f"{dag_id} run {run_id}: {outcome.state} ({outcome.tasks})")


def _settle(client, dag_ids: list[str], timeout: float = 300) -> None:
    """Wait until no run is due or going: unpausing a daily DAG runs its latest interval,
    which is not part of the cycle (nor of the floor)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = dt.datetime.now(dt.UTC).timestamp()
        due = [d for d in dag_ids if (after := client.request("GET", f"dags/{d}").get("next_dagrun_run_after"))
               and _timestamp(after) <= now]
        going = [d for d in dag_ids if any(r["state"] in ("queued", "running") for r in client.latest_runs(d))]
        if not due and not going:
            return
        time.sleep(_POLL)
    raise RuntimeError(f"runs still due or going after {timeout:.0f} s")


def through_scheduler(env: dict[str, str]) -> float:
    """The same cycle as DAG runs on the embedded stack, timed after `esteira up`."""
    _esteira("up", env)
    try:
        os.environ.update(env)
        from esteira.config import get_settings, get_usecase
        from esteira.features.generator import generate_landing
        from esteira.stack.airflow_api import AirflowClient

        settings = get_settings()
        uc = get_usecase("churn", settings)
        generate_landing(uc, settings.landing_dir / uc.source.landing)
        client = AirflowClient.for_settings(settings)
        dag = {stage: uc.dag_id(stage) for stage in STAGES}
        for dag_id in dag.values():
            client.wait_for_dag(dag_id)
            client.unpause(dag_id)
        _settle(client, list(dag.values()))
        seen = {stage: {r["dag_run_id"] for r in client.latest_runs(dag_id, limit=100)}
                for stage, dag_id in dag.items()}
        started = time.time()
        _finish(client, dag["feature_refresh"], client.trigger(dag["feature_refresh"], HISTORY))
        runs = {}
        for stage in ("model_training", "model_promotion", "batch_inference"):
            runs[stage] = _next_run(client, dag[stage], seen[stage])
            _finish(client, dag[stage], runs[stage])
        last = client.trigger(dag["drift_monitoring"], WINDOW)
        _finish(client, dag["drift_monitoring"], last)
        ended = client.latest_runs(dag["drift_monitoring"])[0]
        did = (client.xcom(dag["model_training"], runs["model_training"], "register_challenger"),
               client.xcom(dag["batch_inference"], runs["batch_inference"], "score_batch"),
               client.xcom(dag["drift_monitoring"], last, "monitor_window"))
        if ended["dag_run_id"] != last or not all(did):
            raise RuntimeError(f"the cycle skipped a step the floor does: {did}")
        return _timestamp(ended["end_date"]) - started
    finally:
        _esteira("down", env, check=False)


def _timestamp(value) -> float:
    return (value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))).timestamp()


def demo_and_page(env: dict[str, str]) -> dict[str, float]:
    """`esteira up` + `esteira demo` on a new home with the shipped use case, then the
    Esteira page twice: its first load after the demo, and warm."""
    import httpx

    from esteira.config import get_settings
    from esteira.stack.embedded import admin_password

    up = _esteira("up", env)
    try:
        demo = _esteira("demo", env)
        os.environ.update(env)
        settings = get_settings()
        with httpx.Client(base_url=settings.airflow_url, timeout=120) as http:
            login = {"username": "admin", "password": admin_password(settings)}
            token = http.post("/auth/token", json=login).raise_for_status().json()["access_token"]
            loads = []
            for _ in range(2):
                started = time.perf_counter()
                page = http.get("/esteira/", headers={"Authorization": f"Bearer {token}"})
                loads.append(time.perf_counter() - started)
                if page.status_code != 200 or "Champion" not in page.text:
                    raise RuntimeError(f"the Esteira page answered {page.status_code}: {page.text[:300]}")
    finally:
        _esteira("down", env, check=False)
    return {"up_seconds": up, "demo_seconds": demo, "page_first_load_seconds": loads[0],
            "page_warm_load_seconds": loads[1]}


# The scheduler side as shipped, and two baselines measured in the same run: the stock
# LocalExecutor (each task process imports what it uses: no warm start), and that with
# Airflow's own scheduling defaults too (the loop's idle sleep, the task heartbeat, DAG
# parsing). Parallelism stays 4 on every side: Airflow's 32 would not fit the machine.
SIDES = {
    "floor": ("floor", {}),
    "scheduler": ("scheduler", {}),
    "scheduler_cold": ("scheduler", {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}),
    "scheduler_airflow_defaults": ("scheduler", {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "300",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
    }),
}


def _side(side: str, env: dict[str, str]) -> float:
    """One run of one side, in its own interpreter so neither warms the other's imports."""
    kind, extra = SIDES[side]
    out = subprocess.run([sys.executable, __file__, "--side", kind, "--env", json.dumps(env)],
                         capture_output=True, text=True, env={**os.environ, **extra})
    if out.returncode != 0:
        raise RuntimeError(f"the {side} side failed (home {env['ESTEIRA_HOME']}):\n{out.stderr[-3000:]}")
    shutil.rmtree(env["ESTEIRA_HOME"], ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-demo", action="store_true", help="skip the demo's wall time and the page")
    parser.add_argument("--no-baselines", action="store_true",
                        help="only the floor and the scheduler as shipped (not cold, not Airflow's defaults)")
    parser.add_argument("--side", choices=["floor", "scheduler"], help=argparse.SUPPRESS)
    parser.add_argument("--env", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run = floor if args.side == "floor" else through_scheduler
        print(json.dumps({"seconds": run(json.loads(args.env))}))
        return
    usecases = _usecase_dir(args.entities)
    names = ["floor", "scheduler"] if args.no_baselines else list(SIDES)
    seconds: dict[str, list[float]] = {side: [] for side in names}
    loads = []
    for repeat in range(args.repeats):
        for side in names:
            seconds[side].append(_side(side, _environment(usecases)))
            loads.append(os.getloadavg()[0])
            print(f"{side:>26} #{repeat + 1}: {seconds[side][-1]:7.1f} s  (load average {loads[-1]:.1f})", flush=True)
    median = {side: statistics.median(runs) for side, runs in seconds.items()}
    result = {"entities": args.entities, "repeats": args.repeats,
              "load_averages": [round(x, 1) for x in loads]}
    for side in names:
        result[f"{side}_seconds"] = [round(s, 1) for s in seconds[side]]
        result[f"{side}_median"] = round(median[side], 1)
    for side in names[1:]:
        ratio = median[side] / median["floor"]
        # Each repeat's sides run back to back: their ratio is the one least moved by other
        # work on the machine, which a shared machine's load can swing several-fold in minutes.
        paired = [s / f for f, s in zip(seconds["floor"], seconds[side], strict=True)]
        print(f"{side}: {ratio:.2f}x the floor (medians of {args.repeats}: {median[side]:.1f} s against "
              f"{median['floor']:.1f} s, +{median[side] - median['floor']:.1f} s); "
              f"repeat by repeat {', '.join(f'{r:.2f}x' for r in paired)}")
        key = "overhead" if side == "scheduler" else f"{side}_overhead"
        result |= {f"{key}_ratio": round(ratio, 2), f"{key}_seconds": round(median[side] - median["floor"], 1),
                   f"{key}_paired_ratios": [round(r, 2) for r in paired]}
    if not args.no_baselines:
        base = median["scheduler_airflow_defaults"] - median["floor"]
        shares = {
            "scheduling settings": median["scheduler_airflow_defaults"] - median["scheduler_cold"],
            "warm task processes": median["scheduler_cold"] - median["scheduler"],
        }
        print(f"of the overhead with Airflow's defaults (+{base:.1f} s): "
              + "; ".join(f"{name} removed {cut:.1f} s ({cut / base:.0%})" for name, cut in shares.items()))
        result["overhead_removed_share"] = {name: round(cut / base, 3) for name, cut in shares.items()}
    if not args.no_demo:
        env = _environment(None, serve=True)
        demo = demo_and_page(env)
        shutil.rmtree(env["ESTEIRA_HOME"], ignore_errors=True)
        print(f"make demo without setup: {demo['up_seconds'] + demo['demo_seconds']:.1f} s "
              f"(esteira up {demo['up_seconds']:.1f} s, esteira demo {demo['demo_seconds']:.1f} s); "
              f"Esteira page: first load {demo['page_first_load_seconds']:.2f} s, "
              f"warm {demo['page_warm_load_seconds']:.2f} s")
        result |= {key: round(value, 2) for key, value in demo.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
